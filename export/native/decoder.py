"""Emit a fused decoder for a registered architecture, one layer at a time.

Per layer (Llama family; Qwen2 adds q/k/v biases):

    residual ──┬──────────────────────────────────────┐
               │                                      │
    SkipSimplifiedLayerNorm ─> qkv linear ─> GroupQueryAttention(rotary) ─> o linear
               │                                      │
               └──── SkipSimplifiedLayerNorm <─────────┘  (adds o to the residual, normalises)
                          │
                 gate|up linear ─> Split ─> act(gate) * up ─> down linear ─> next layer

A "linear" is MatMulNBits (int4/int8) or MatMul (fp32), plus an Add where the config has biases (Qwen2's
q/k/v; Llama's attention_bias / mlp_bias). act is the config's hidden_act (`activations.ACTIVATIONS`);
each layer's attention window is `ArchSpec.layer_window`. lm_head runs only on the last
`num_logits_to_keep` positions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgelm.export.arch import ArchSpec
from edgelm.export.native.activations import ACTIVATIONS
from edgelm.export.native.graph import GraphBuilder
from edgelm.export.native.gptq import gptq, gptq_rows, quantize_weighted, searched_row_slices
from edgelm.export.native.precision import Precision, PrecisionTable, precision_table
from edgelm.export.native.quant import half_storable, quantize_blockwise, quantize_row_slices
from edgelm.export.native.rope import rope_switch, rotary_caches
from edgelm.export.native.weights import SafetensorsReader, role_weight
from edgelm.progress import Progress, as_progress
from edgelm.export.optimum_backend import OPTIMUM_IO
from edgelm.export.quantize import CALIBRATED, resolve_calibration
from edgelm.manifest import LinearQuant, WeightStats

# optimum's names, so both builders' packages look alike; no position_ids (GQA rotates by itself) and
# an input saying how many last positions get logits
NATIVE_IO = replace(OPTIMUM_IO, position_ids=None, logits_to_keep="num_logits_to_keep")
# --target gpu: no int64 arithmetic in the graph (GPU EPs such as WebGPU leave it to the CPU): the lengths
# GroupQueryAttention takes and the logits slice's start come from the host
GPU_IO = replace(NATIVE_IO, attention_mask=None, logits_to_keep=None, seqlens_k="seqlens_k",
                 total_sequence_length="total_sequence_length", logits_start="logits_start")
MS = "com.microsoft"


@dataclass(frozen=True)
class LinearFormat:
    """How linears are stored: fp32 MatMul, or MatMulNBits with `bits`."""

    bits: int | None = None
    block_size: int = 32  # attention linears, embedding and lm_head
    symmetric: bool = True
    accuracy_level: int = 4
    pack_mlp: bool = True  # gate|up as one MatMulNBits
    mlp_block_size: int | None = None  # gate/up/down (most of the weights); None = block_size
    float_type: str = "float32"  # activations, float weights and the KV cache (float16: fp16 package)
    table: PrecisionTable | None = None  # per-linear bits and block (None: `bits` and the block sizes above)
    rounding: str = "rtn"  # rtn (min/max) | search (weighted scale search) | gptq (error-compensating)

    def block(self, mlp: bool = False) -> int:
        return self.mlp_block_size or self.block_size if mlp else self.block_size

    def precision(self, name: str, mlp: bool) -> Precision:
        """The bits and block of the linear `name` (a builder graph name)."""
        p = self.table.choose(name) if self.table is not None else Precision(self.bits, self.block(mlp))
        return p if p.symmetric is not None else replace(p, symmetric=self.symmetric)


class DecoderBuilder:
    def __init__(self, arch: ArchSpec, reader: SafetensorsReader, folder: Path, model_file: str, fmt: LinearFormat,
                 progress=None, io=NATIVE_IO):
        self.arch, self.reader, self.fmt, self.progress, self.io = arch, reader, fmt, progress, io
        self.float = np.dtype(fmt.float_type)  # every float tensor of the graph but the logits
        self.g = GraphBuilder(folder, model_file)
        self.rounded: dict[str, tuple[Precision, str]] = {}  # linear name -> (precision, rounding) as built
        self.deferred_table: tuple[str, Precision] | None = None  # a tied table rounded at the lm_head (gptq)

    def _f(self, array: np.ndarray) -> np.ndarray:
        return array.astype(self.float, copy=False)

    # -- building blocks -----------------------------------------------------------------------
    def linear(self, x: str, weight: np.ndarray, name: str, bias: np.ndarray | None = None, mlp: bool = False) -> str:
        """x @ weight.T (+ bias); weight is HF's (out, in). `mlp`: quantized with the MLP block size."""
        g, fmt = self.g, self.fmt
        if fmt.bits is None:
            w = g.weight(f"{name}.weight", np.ascontiguousarray(self._f(weight).T))
            (y,) = g.node("MatMul", [x, w], [f"{name}/out"], name=f"{name}/MatMul")
        else:
            p = fmt.precision(name, mlp)
            y = self._matmul_nbits(x, self._store(self._quantize(weight, name, p), name, p), name)
        if bias is not None:
            (y,) = self.g.node("Add", [y, self.g.weight(f"{name}.bias", self._f(bias))], [f"{name}/biased"],
                               name=f"{name}/Add")
        return y

    def _quantize(self, weight: np.ndarray, name: str, p: Precision):
        """`weight` (N, K) rounded to `p`: GPTQ against its inputs' second moments where the reader has them
        (calibration gptq), a weighted scale search (search, or gptq without moments), else min/max."""
        rounding = self.fmt.rounding
        moments = getattr(self.reader, "moments", None)
        hessian = moments(name) if rounding == "gptq" and moments is not None else None
        self.rounded[name] = (p, "gptq" if hessian is not None else "rtn" if rounding == "rtn" else "search")
        if hessian is not None:
            return gptq(weight, hessian, p.bits, p.block, p.symmetric)
        if rounding == "rtn":
            return quantize_blockwise(weight, p.bits, p.block, p.symmetric)
        return quantize_weighted(weight, None, p.bits, p.block, p.symmetric)

    def _store(self, q, name: str, p: Precision, gather_only: bool = False) -> tuple:
        """Write a quantized weight's codes, scales (and zero points); return (names, N, K, precision)."""
        g = self.g
        names = [g.weight(f"{name}.qweight", q.codes, gather_only), self._scales(q.scales, name, gather_only)]
        if q.zero_points is not None:
            names.append(g.weight(f"{name}.zero_points", q.zero_points, gather_only))
        return names, q.n, q.k, p

    def _scales(self, scales: np.ndarray, name: str, gather_only: bool) -> str:
        """The scales in the activations' type (MatMulNBits binds both to one type parameter): float16 on disk
        whenever they are float16 values, cast to float32 in a float32 graph (folded at load, before prepacking)."""
        from onnx import TensorProto

        g = self.g
        if self.float == np.float32 and half_storable(scales):
            stored = g.weight(f"{name}.scales_f16", scales.astype(np.float16), gather_only)
            return g.node("Cast", [stored], [f"{name}.scales"], name=f"{name}/scales/Cast", to=TensorProto.FLOAT)[0]
        return g.weight(f"{name}.scales", self._f(scales), gather_only)

    def _matmul_nbits(self, x: str, stored: tuple, name: str) -> str:
        names, n, k, p = stored
        (y,) = self.g.node("MatMulNBits", [x, *names], [f"{name}/out"], name=f"{name}/MatMulNBits", domain=MS,
                           K=k, N=n, bits=p.bits, block_size=p.block, accuracy_level=self.fmt.accuracy_level)
        return y

    def embedding(self, ids: str, tied: bool) -> tuple[str, tuple | None]:
        """Token embeddings: GatherBlockQuantized over block-quantized rows when the linears are quantized
        (the same codes then serve a tied lm_head), else a float Gather. Returns (x, shared lm_head)."""
        g, fmt, a = self.g, self.fmt, self.arch
        embed = a.tensor("embed")
        name = "/model/embed_tokens"
        hidden = a.hidden_size
        p = None if fmt.bits is None else fmt.precision(name, False)  # the lm_head's, when tied
        while p is not None and hidden % p.block and p.block > 16:  # GatherBlockQuantized: blocks tile a row
            p = replace(p, block=p.block // 2)
        if p is None or hidden % p.block:
            w = g.weight("model.embed_tokens.weight", self._f(self.reader.get(embed)), gather_only=True)
            (x,) = g.node("Gather", [w, ids], [f"{name}/out"], name=f"{name}/Gather")
            return x, None
        if tied and fmt.rounding == "gptq" and getattr(self.reader, "head_moments", None) is not None:
            # the table is rounded at the lm_head, against its inputs' moments (known once every layer is
            # calibrated); its initializers' names are fixed now
            self.deferred_table = (embed, p)
            names = [f"{name}.qweight", f"{name}.scales"] + ([] if p.symmetric else [f"{name}.zero_points"])
            stored = (names, getattr(self.reader, "reader", self.reader).shape(embed)[0], hidden, p)
            return self._gather_quantized(ids, stored, name), stored
        self.rounded[name] = (p, "rtn" if fmt.rounding == "rtn" else "search")
        rounder = quantize_row_slices if fmt.rounding == "rtn" else searched_row_slices
        q = rounder(*_table_rows(self.reader, embed), p.bits, p.block, p.symmetric)
        stored = self._store(q, name, p, gather_only=not tied)  # tied: lm_head streams the whole table per token
        return self._gather_quantized(ids, stored, name), stored if tied else None

    def _gather_quantized(self, ids: str, stored: tuple, name: str) -> str:
        g = self.g
        names, n, _, p = stored
        rows = g.constant(f"{name}/rows_shape", np.array([n, -1], dtype=np.int64))
        inputs = [g.node("Reshape", [t, rows], [f"{t}/2d"], name=f"{t}/Reshape")[0] for t in names]
        inputs.insert(1, ids)
        (x,) = g.node("GatherBlockQuantized", inputs, [f"{name}/out"], name=f"{name}/GatherBlockQuantized",
                      domain=MS, gather_axis=0, quantize_axis=1, block_size=p.block, bits=p.bits)
        return x

    def _write_deferred_table(self) -> None:
        """GPTQ of the tied vocabulary table against the lm_head's input moments, a chunk of rows at a time
        (rows are independent); written under the names the embedding's nodes already read. Falls back to the
        weighted scale search when the moments are missing."""
        embed, p = self.deferred_table
        name = "/model/embed_tokens"
        hessian = self.reader.head_moments()
        read, rows, cols = _table_rows(getattr(self.reader, "reader", self.reader), embed)  # the file's reader
        if hessian is None:
            q = searched_row_slices(read, rows, cols, p.bits, p.block, p.symmetric)
        else:
            q = gptq_rows(read, rows, cols, hessian, p.bits, p.block, p.symmetric)
        self.rounded[name] = (p, "search" if hessian is None else "gptq")
        first = len(self.g.nodes)
        self._store(q, name, p)
        added = self.g.nodes[first:]
        del self.g.nodes[first:]
        self.g.nodes[:0] = added  # a scales Cast feeds the embedding: it goes first

    def norm(self, x: str, residual: str | None, weight_role: str, layer: int | None, name: str) -> tuple[str, str]:
        """RMSNorm of x (+ residual when given); returns (normed, new residual)."""
        g, eps = self.g, self.arch.rms_norm_eps
        w = g.weight(f"{name}.weight", self._gain(self.reader.get(self.arch.tensor(weight_role, layer))))
        if residual is None:
            (y,) = g.node("SimplifiedLayerNormalization", [x, w], [f"{name}/out"], name=f"{name}/SimplifiedLayerNorm",
                          axis=-1, epsilon=eps, stash_type=1)
            return y, x
        y, _, _, total = g.node("SkipSimplifiedLayerNormalization", [x, residual, w],
                                [f"{name}/out", "", "", f"{name}/residual"], name=f"{name}/SkipSimplifiedLayerNorm",
                                domain=MS, epsilon=eps)
        return y, total

    #  qkv ─ Split ─┬─ q ─ Reshape (b, s, heads, hd) ─ SimplifiedLayerNorm(q_norm) ─ Reshape (b, s, heads*hd) ─┐
    #               ├─ k ─ Reshape (b, s, kv, hd) ──── SimplifiedLayerNorm(k_norm) ─ Reshape (b, s, kv*hd) ────┼─> GQA
    #               └─ v ─────────────────────────────────────────────────────────────────────────────────────┘
    def qk_normed(self, qkv: str, layer: int, p: str) -> list[str]:
        """q, k, v apart, q and k RMS-normed per head (Qwen3, Gemma-3); GroupQueryAttention rotates them after."""
        g, a = self.g, self.arch
        hd = a.head_dim
        sizes = g.constant(f"{p}/attn/qkv_sizes", np.array([a.num_heads * hd, a.num_kv_heads * hd,
                                                            a.num_kv_heads * hd], dtype=np.int64))
        q, k, v = g.node("Split", [qkv, sizes], [f"{p}/attn/q", f"{p}/attn/k", f"{p}/attn/v"],
                         name=f"{p}/attn/qkv/Split", axis=-1)
        heads = g.constant(f"{p}/attn/heads_shape", np.array([0, 0, -1, hd], dtype=np.int64))
        flat = g.constant(f"{p}/attn/flat_shape", np.array([0, 0, -1], dtype=np.int64))
        out = []
        for x, role in ((q, "q_norm"), (k, "k_norm")):
            name = f"{p}/attn/{role}"
            (split,) = g.node("Reshape", [x, heads], [f"{name}/heads"], name=f"{name}/Reshape")
            w = g.weight(f"{name}.weight", self._gain(self._w(role, layer)))
            (normed,) = g.node("SimplifiedLayerNormalization", [split, w], [f"{name}/out"],
                               name=f"{name}/SimplifiedLayerNorm", axis=-1, epsilon=a.rms_norm_eps, stash_type=1)
            (back,) = g.node("Reshape", [normed, flat], [f"{name}/flat"], name=f"{name}/ReshapeBack")
            out.append(back)
        return [*out, v]

    def _gain(self, w: np.ndarray) -> np.ndarray:
        """An RMSNorm gain as the graph applies it: w, or (1 + w) where the family stores it so (Gemma)."""
        offset = self.arch.norm_offset
        return self._f(w.astype(np.float32) + np.float32(offset) if offset else w)

    def scaled(self, x: str, factor: float | None, name: str) -> str:
        """x * factor (Granite's multipliers); x itself when there is none or it is 1."""
        if factor is None or factor == 1.0:
            return x
        c = self.g.constant(f"{name}/multiplier", np.array(factor, dtype=self.float))
        (y,) = self.g.node("Mul", [x, c], [f"{name}/scaled"], name=f"{name}/Mul")
        return y

    def _w(self, role: str, layer: int) -> np.ndarray:
        return self.reader.get(self.arch.tensor(role, layer))

    def _maybe(self, role: str, layer: int) -> np.ndarray | None:
        """An optional tensor (a bias): read when this config's model has it (ArchSpec.uses), else None."""
        return self.reader.get(self.arch.tensor(role, layer)) if self.arch.uses(role) else None

    # -- the model -----------------------------------------------------------------------------
    def build(self) -> tuple[Path, WeightStats]:
        from onnx import TensorProto as T
        from onnx.helper import np_dtype_to_tensor_dtype

        a, g = self.arch, self.g
        ftype = np_dtype_to_tensor_dtype(self.float)
        kv, hd = a.num_kv_heads, a.head_dim
        io = self.io
        ids = g.input(io.input_ids, T.INT64, ["batch", "sequence"])
        if io.seqlens_k:  # from the host (GPU_IO)
            seqlens = g.input(io.seqlens_k, T.INT32, ["batch"])
            total = g.input(io.total_sequence_length, T.INT32, [])
            start = g.input(io.logits_start, T.INT64, [1])
        else:
            mask = g.input(io.attention_mask, T.INT64, ["batch", "total_sequence"])
            keep = g.input(io.logits_to_keep, T.INT64, [])
            seqlens, total = self._lengths(mask)
            start = self._slice_start(keep)
        tied = a.tied_embeddings
        x, shared_head = self.embedding(ids, tied)
        x = self.scaled(x, a.embedding_scale, "/model/embed_tokens")
        # (positions, rotary_dim / 2): GroupQueryAttention turns the first rotary_dim dims of each head; one pair of
        # caches per rope base the layers use (Gemma-3's sliding layers have their own)
        caches, layer_caches = {}, []  # repr((theta, scaling)) -> (cos, sin) names; per layer its pair
        for i in range(a.num_layers):
            theta, scaling = a.layer_rope_base(i)
            key = repr((theta, scaling))
            if key not in caches:
                cos, sin = rotary_caches(a.rotary_dim, a.context_length, theta, scaling)
                suffix = f"_{len(caches)}" if caches else ""
                pair = (g.weight(f"rotary.cos_cache{suffix}", self._f(cos)),
                        g.weight(f"rotary.sin_cache{suffix}", self._f(sin)))
                del cos, sin
                switch = rope_switch(scaling)
                caches[key] = pair if switch is None else self.longrope_caches(pair, switch, seqlens, total, suffix)
            layer_caches.append(caches[key])

        residual, down = None, x
        for i in range(a.num_layers):
            p = f"/model/layers.{i}"
            h, residual = self.norm(down, residual, "input_norm", i, f"{p}/input_layernorm")
            qkv_w = self._w("qkv", i) if "qkv" in a.fused else \
                np.concatenate([self._w("q", i), self._w("k", i), self._w("v", i)], axis=0)
            biases = [self._maybe(r, i) for r in ("q_bias", "k_bias", "v_bias")]
            qkv_b = np.concatenate(biases) if all(b is not None for b in biases) else None
            qkv = self.linear(h, qkv_w, f"{p}/attn/qkv_proj", qkv_b)
            del qkv_w
            past_k, past_v = (g.input(n, ftype, ["batch", kv, "past_sequence", hd]) for n in io.past_names(i))
            present_k, present_v = (g.output(n, ftype, ["batch", kv, "total_sequence", hd])
                                    for n in io.present_names(i))
            window = a.layer_window(i)
            qkv_in = self.qk_normed(qkv, i, p) if a.qk_norm else [qkv, "", ""]  # packed, or q, k, v apart
            rope = a.layer_rope(i)  # NoPE layers (SmolLM3) attend without rotary
            cos_sin = layer_caches[i] if rope else ("", "")
            attn, _, _ = g.node(
                "GroupQueryAttention", [*qkv_in, past_k, past_v, seqlens, total, *cos_sin],
                [f"{p}/attn/out", present_k, present_v], name=f"{p}/attn/GroupQueryAttention", domain=MS,
                num_heads=a.num_heads, kv_num_heads=kv, do_rotary=int(rope), rotary_interleaved=0,
                local_window_size=int(window) if window else -1,
                **({"scale": scale} if (scale := a.attention_scale) is not None else {}),
                **({"softcap": a.softcaps["attention"]} if "attention" in a.softcaps else {}),
            )
            o = self.linear(attn, self._w("o", i), f"{p}/attn/o_proj", self._maybe("o_bias", i))
            o = self.scaled(o, a.multiplier("residual"), f"{p}/attn/o_proj")
            if a.sandwich_norms:  # Gemma: the attention output is normed before it joins the residual
                o, _ = self.norm(o, None, "attn_out_norm", i, f"{p}/attn_out_norm")
            h, residual = self.norm(o, residual, "post_norm", i, f"{p}/post_attention_layernorm")
            gate, up = self.mlp_in(h, i, p)
            fn = ACTIVATIONS[a.activation]
            (act,) = g.node(fn.fused_op, [gate], [f"{p}/mlp/act"], name=f"{p}/mlp/act/{fn.fused_op}", domain=MS,
                            **fn.fused_attrs)
            (prod,) = g.node("Mul", [act, up], [f"{p}/mlp/prod"], name=f"{p}/mlp/Mul")
            down = self.linear(prod, self._w("down", i), f"{p}/mlp/down_proj", self._maybe("down_bias", i), mlp=True)
            down = self.scaled(down, a.multiplier("residual"), f"{p}/mlp/down_proj")
            if a.sandwich_norms:
                down, _ = self.norm(down, None, "mlp_out_norm", i, f"{p}/mlp_out_norm")
            if self.progress is not None:
                self.progress.update(1)

        normed, _ = self.norm(down, residual, "final_norm", None, "/model/norm")
        last = self._last_positions(normed, start)
        if shared_head is not None:  # tied and quantized: lm_head reads the embedding's own codes
            if self.deferred_table is not None:
                self._write_deferred_table()
            logits = self._matmul_nbits(last, shared_head, "/lm_head")
        else:
            head = self.reader.get(a.tensor("embed" if tied else "lm_head"))  # read again, not held meanwhile
            logits = self.linear(last, head, "/lm_head")
            del head
        divisor = a.multiplier("logits")
        logits = self.scaled(logits, None if divisor is None else 1.0 / divisor, "/lm_head")
        if "logits" in a.softcaps:  # cap * tanh(logits / cap)
            cap = a.softcaps["logits"]
            (tanh,) = g.node("Tanh", [self.scaled(logits, 1.0 / cap, "/lm_head/softcap_in")], ["/lm_head/softcap/tanh"],
                             name="/lm_head/softcap/Tanh")
            logits = self.scaled(tanh, cap, "/lm_head/softcap_out")
        out = g.output(io.logits, T.FLOAT, ["batch", "kept_sequence", a.vocab_size])  # float32 in every mode
        if ftype == T.FLOAT:
            g.node("Identity", [logits], [out], name="/lm_head/Identity")
        else:
            g.node("Cast", [logits], [out], name="/lm_head/Cast", to=T.FLOAT)
        path = g.save()
        return path, WeightStats(total=g.total_bytes, per_token=g.total_bytes - g.gather_only_bytes)

    def longrope_caches(self, pair: tuple[str, str], switch: int, seqlens: str, total: str,
                        suffix: str) -> tuple[str, str]:
        """The rows of the stacked short/long caches this run rotates with, as transformers picks them: the long
        half when the sequence (seqlens_k + 1: `total` is the buffer's length in the shared-buffer mode) passes
        `switch`. `total` rows are copied (GroupQueryAttention wants that many); int32 arithmetic, as the GPU
        target takes it."""
        g, p = self.g, f"/rotary/longrope{suffix}"
        const = lambda name, v: g.constant(f"{p}/{name}", np.array(v, dtype=np.int32))  # noqa: E731
        (last,) = g.node("ReduceMax", [seqlens], [f"{p}/last_position"], name=f"{p}/ReduceMax", keepdims=0)
        (past,) = g.node("Greater", [last, const("last_short", switch - 1)], [f"{p}/long"], name=f"{p}/Greater")
        (start,) = g.node("Where", [past, const("long_start", self.arch.context_length), const("zero", 0)],
                          [f"{p}/start"], name=f"{p}/Where")
        (end,) = g.node("Add", [start, total], [f"{p}/end"], name=f"{p}/Add")
        axes, unsqueeze_axes = const("axes", [0]), g.constant(f"{p}/unsqueeze_axes", np.array([0], dtype=np.int64))
        bounds = []
        for name, value in (("starts", start), ("ends", end)):
            (b,) = g.node("Unsqueeze", [value, unsqueeze_axes], [f"{p}/{name}"], name=f"{p}/Unsqueeze_{name}")
            bounds.append(b)
        return tuple(g.node("Slice", [cache, *bounds, axes], [f"{p}/{kind}"], name=f"{p}/Slice_{kind}")[0]
                     for cache, kind in zip(pair, ("cos", "sin")))

    def mlp_in(self, h: str, i: int, p: str) -> tuple[str, str]:
        """gate and up projections: one packed linear + Split, or two linears (LinearFormat.pack_mlp)."""
        if not self.fmt.pack_mlp:
            gate_w, up_w = (role_weight(self.reader, self.arch, r, i) for r in ("gate", "up"))
            return (self.linear(h, gate_w, f"{p}/mlp/gate_proj", self._maybe("gate_bias", i), mlp=True),
                    self.linear(h, up_w, f"{p}/mlp/up_proj", self._maybe("up_bias", i), mlp=True))
        g, inter = self.g, self.arch.intermediate_size
        biases = [self._maybe("gate_bias", i), self._maybe("up_bias", i)]
        bias = np.concatenate(biases) if biases[0] is not None else None  # one mlp_bias flag switches both
        weight = self._w("gate_up", i) if "gate_up" in self.arch.fused else \
            np.concatenate([self._w("gate", i), self._w("up", i)], axis=0)  # (2 x inter, hidden): gate rows first
        gate_up = self.linear(h, weight, f"{p}/mlp/gate_up_proj", bias, mlp=True)
        split = g.constant(f"{p}/mlp/split_sizes", np.array([inter, inter], dtype=np.int64))
        gate, up = g.node("Split", [gate_up, split], [f"{p}/mlp/gate", f"{p}/mlp/up"], name=f"{p}/mlp/Split", axis=-1)
        return gate, up

    def _lengths(self, mask: str) -> tuple[str, str]:
        """seqlens_k (batch,) int32 = tokens seen - 1, and total_sequence_length, an int32 scalar."""
        g = self.g
        axis = g.constant("/model/attn_mask/axis1", np.array([1], dtype=np.int64))
        (summed,) = g.node("ReduceSum", [mask, axis], ["/model/attn_mask/sum"], name="/model/attn_mask/ReduceSum",
                           keepdims=0)
        one = g.constant("/model/attn_mask/one", np.array(1, dtype=np.int64))
        (minus,) = g.node("Sub", [summed, one], ["/model/attn_mask/sub"], name="/model/attn_mask/Sub")
        (seqlens,) = g.node("Cast", [minus], ["/model/attn_mask/seqlens_k"], name="/model/attn_mask/Cast", to=6)
        (shape,) = g.node("Shape", [mask], ["/model/attn_mask/shape"], name="/model/attn_mask/Shape", start=1, end=2)
        (squeezed,) = g.node("Squeeze", [shape], ["/model/attn_mask/total_i64"], name="/model/attn_mask/Squeeze")
        (total,) = g.node("Cast", [squeezed], ["/model/attn_mask/total"], name="/model/attn_mask/CastTotal", to=6)
        return seqlens, total

    def _slice_start(self, keep: str) -> str:
        """-keep as a (1,) int64: where the positions whose logits the caller reads begin."""
        g = self.g
        (neg,) = g.node("Neg", [keep], ["/lm_head/neg_keep"], name="/lm_head/Neg")
        zero = g.constant("/lm_head/zero", np.array([0], dtype=np.int64))
        (start,) = g.node("Unsqueeze", [neg, zero], ["/lm_head/start"], name="/lm_head/Unsqueeze")
        return start

    def _last_positions(self, x: str, start: str) -> str:
        """x[:, start:, :]: only the positions whose logits the caller reads go through lm_head."""
        g = self.g
        end = g.constant("/lm_head/end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
        axis = g.constant("/lm_head/axis", np.array([1], dtype=np.int64))
        (out,) = g.node("Slice", [x, start, end, axis], ["/lm_head/last"], name="/lm_head/Slice")
        return out


def _table_rows(reader, embed: str):
    """(read(start, stop), rows, cols) of the vocabulary table: by rows where the reader reads by rows (the float
    table is then never whole: 2.5 GB at 200k x 3072), else from the whole table (the awq reader: its
    calibration forward starts from the table)."""
    if hasattr(reader, "get_rows"):
        rows, cols = reader.shape(embed)
        return (lambda i, j: reader.get_rows(embed, i, j)), rows, cols
    table = reader.get(embed)
    return (lambda i, j: table[i:j]), *table.shape


def export_native(source, workdir: Path, mode, progress: bool | Progress = True, io=NATIVE_IO):
    """Build the fused decoder into `workdir/model.onnx` (+ .data) with `mode`'s precision; return (path, io,
    weight stats, the manifest's Quantization: what was done, MLP block size and calibration included).

    With awq calibration (`resolve_calibration`: int4 by default) each layer's weights are scaled by
    activation-aware factors from a float forward of calibration windows (`edgelm.export.native.awq`)."""
    bits, quant_config = mode.native_bits, mode.config
    mix = mode.mix if quant_config.mix == "uniform" and mode.mix else quant_config.mix
    table = precision_table(mix, bits, quant_config, source.arch.num_layers) if bits is not None else None
    reader = SafetensorsReader(source.path)
    awq = None
    calibration = resolve_calibration(quant_config, bits, mode.calibration)
    if calibration in CALIBRATED and not source.arch.awq_supported:  # fused weights, or a forward it does not model
        asked = quant_config.calibration if quant_config.calibration in CALIBRATED else mode.calibration
        if asked in CALIBRATED:  # asked for by name: --calibration, or a format named for it (int4-gptq)
            from edgelm.errors import ExportError

            what = f"fused weights ({', '.join(source.arch.fused)})" if source.arch.fused else "layers"
            named = (f"--calibration {asked}" if quant_config.calibration == asked else
                     f"--quant {mode.name} ({asked} calibration)")
            raise ExportError(f"{named} is not built for {source.arch.name}'s {what}; export with --calibration none")
        calibration = "none"  # auto for int4: plain rounding, said in the manifest's quantization block
    rounding = {"gptq": "gptq", "awq": "rtn", "none": "rtn", "search": "search"}[calibration]
    fmt = LinearFormat(bits, quant_config.block_size, quant_config.symmetric, quant_config.accuracy_level,
                       mlp_block_size=quant_config.mlp_block_size, float_type=mode.native_float, table=table,
                       rounding=rounding)
    if calibration in CALIBRATED:
        from edgelm.export.native.awq import awq_reader

        gptq_rounding = calibration == "gptq"
        samples = quant_config.gptq_samples if gptq_rounding else quant_config.calibration_samples
        reader = awq = awq_reader(source, reader, fmt, samples, moments=gptq_rounding)
    what = f"build the {mode.name} graph" + (f" ({calibration}: calibrate, scale, quantize)" if awq else "")
    with as_progress(progress).stage(what, total=source.arch.num_layers, unit="layer") as bar:
        builder = DecoderBuilder(source.arch, reader, workdir, "model.onnx", fmt, bar, io)
        try:
            path, stats = builder.build()
        finally:
            builder.g.close()
    quant = mode.describe()
    if bits is not None and table is None and fmt.block(mlp=True) != fmt.block_size:
        quant = replace(quant, mlp_block_size=fmt.block(mlp=True))
    if awq is not None:
        quant = replace(quant, calibration=f"{calibration}: {len(awq.windows)} windows x {len(awq.windows[0])} "
                                           f"tokens, awq mean alpha {awq.mean_alpha:.3f}")
    elif calibration == "search":
        quant = replace(quant, calibration="search: scales and zero points searched per block (no calibration text)")
    if table is not None:
        quant = replace(quant, mix=mix, linears=tuple(
            LinearQuant(name, p.bits, p.block, how, bool(p.symmetric)) for name, (p, how) in builder.rounded.items()))
    return path, io, stats, quant
