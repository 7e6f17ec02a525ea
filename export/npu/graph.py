"""A static-shape decoder of plain ONNX ops, the form the QNN HTP runs in full.

One builder makes both graphs of an NPU package: `prefill` (N = chunk tokens) and `decode` (N = 1).
Both attend over CTX cache positions: CTX - N past slots fed by the runtime, then the N new ones. They
have identical node and tensor names, so one set of activation ranges serves both.

The embedding lookup is not in the graphs: the runtime reads the rows from the package's int8 table
(`embedding_table`, one scale per 64 values of a row) and feeds them, as phone deployments do. In the graph a vocab x
hidden table would be one 16-bit tensor of the whole context binary (467 MB for a 152k vocabulary at
width 1536), loaded on the NPU for a lookup of N rows.

Inputs (all static):  inputs_embeds (1, N, hidden) | cos, sin (1, N, hd) | mask (1, 1, N, CTX) float, 0 or -100 |
                      past_key_values.{i}.key/value (1, kv, CTX - N, hd)
Outputs:              logits (1, N, vocab) | present.{i}.key/value (1, kv, N, hd): only the new positions;
                      the runtime writes them into the cache it holds.

Per layer (plain ops only; no GroupQueryAttention, no finfo.min mask, no position-table MatMul):

    x ─ RMSNorm ─┬─ q MatMul(+b) ─ Reshape/Transpose ─ rotary ──────────────┐  (q scaled by ck/sqrt(hd))
                 ├─ k MatMul(+b) ─ Reshape/Transpose ─ rotary ─> present.k ─ Concat(past.k) ─┐
                 └─ v MatMul(+b) ─ Reshape/Transpose ───────────> present.v ─ Concat(past.v) ─┤
    q (1,kv,G*N,hd) @ K^T ─ (1,H,N,CTX) + mask ─ Softmax ─ (1,kv,G*N,CTX) @ V ─ o MatMul ─ + x ─┐
    ┌────────────────────────────────────────────────────────────────────────────────────────────┘
    └─ RMSNorm ─ gate MatMul ─ g * Sigmoid(g) ─ * up MatMul ─ down MatMul ─ + ─> next layer

The families' switches (ArchSpec) in plain ops: (1 + w) gains and Granite's residual / logits scalars folded
into weights, the embedding scale folded into the package's table (pipeline), sandwich norms, q/k RMSNorm per
head (smoothing and the score scale in its gains), partial rotary (Slice, rotate, Concat), layers without rotary,
one cos/sin input pair per rope base (`cos`, `cos_1`, ...: Gemma-3's local layers), tanh soft-capping of
scores and logits (the 1/cap folded into q and lm_head). Phi-3's fused weights are cut at read.

RMSNorm is one SimplifiedLayerNormalization (QNN's RmsNorm). GQA without repeating K/V: q (1, H, N, hd)
is viewed as (1, kv, G*N, hd), G = H / kv, so each kv head meets its own G query heads in one MatMul.
Rotary is `x*cos + concat(x2, x1)*sin` with sin pre-signed (its first half negated), so no Neg. k is
divided by per-channel factors ck and q multiplied by them (see smoothing_factors), folded into weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.export.arch import ArchSpec
from edgelm.export.native.graph import GraphBuilder
from edgelm.export.native.weights import SafetensorsReader, role_weight
from edgelm.export.native.activations import ACTIVATIONS
from edgelm.export.native.rope import rotary_for_length
from edgelm.manifest import GraphIO, rotary_names

STATIC_IO = GraphIO(
    input_ids="input_ids", logits="logits",
    past_key="past_key_values.{layer}.key", past_value="past_key_values.{layer}.value",
    present_key="present.{layer}.key", present_value="present.{layer}.value",
)
COS, SIN, MASK, EMBEDS = "cos", "sin", "attention_bias", "inputs_embeds"
MASKED = -100.0  # what the mask adds to a hidden position: exp(-100) is 0 in fp32, and QDQ stays fine


@dataclass(frozen=True)
class StaticShape:
    tokens: int  # N: tokens per run
    context: int  # CTX: positions attended over (past slots + the new ones)


def rope_sets(arch: ArchSpec) -> list[tuple[float, dict | None]]:
    """The distinct (theta, scaling) pairs the rotary layers use, in layer order (Gemma-3: local, then global)."""
    sets: list = []
    for i in range(arch.num_layers):
        if arch.layer_rope(i) and (base := arch.layer_rope_base(i)) not in sets:
            sets.append(base)
    return sets or [(arch.rope_theta, arch.rope_scaling)]


def rotary_table(arch: ArchSpec, context: int, longest: int | None = None) -> np.ndarray:
    """(2 x sets, context, rotary_dim) float32: per rope set cos, and sin with its first half negated
    (rotate-half folded in). `longest`: the longest real sequence (longrope picks its factors by it)."""
    tables = []
    for theta, scaling in rope_sets(arch):
        cos, sin = rotary_for_length(arch.rotary_dim, context, theta, scaling, longest)
        tables += [np.concatenate([cos, cos], axis=-1), np.concatenate([-sin, sin], axis=-1)]
    return np.stack(tables).astype(np.float32)


class StaticDecoderBuilder:
    def __init__(self, arch: ArchSpec, reader: SafetensorsReader, folder: Path, model_file: str, shape: StaticShape,
                 smoothing: dict | None = None):
        self.arch, self.reader, self.shape = arch, reader, shape
        self.smoothing = smoothing or {}  # layer -> ck, see smoothing_factors
        self.g = GraphBuilder(folder, model_file)

    # -- small helpers -----------------------------------------------------------------------------
    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        """One node with one float output (every node output in this graph is float)."""
        from onnx import TensorProto

        (out,) = self.g.node(op, inputs, [f"{name}/out"], name=f"{name}/{op}", **attrs)
        return self.g.typed(out, TensorProto.FLOAT)

    def const(self, name: str, value) -> str:
        return self.g.constant(name, np.asarray(value))

    def shape_const(self, name: str, dims: list[int]) -> str:
        return self.const(name, np.array(dims, dtype=np.int64))

    def w(self, role: str, layer: int | None = None) -> np.ndarray:
        return role_weight(self.reader, self.arch, role, layer)

    def gain(self, role: str, layer: int | None) -> np.ndarray:
        """An RMSNorm gain as applied: w, or (offset + w) (Gemma)."""
        w, offset = self.w(role, layer), self.arch.norm_offset
        return w.astype(np.float32) + np.float32(offset) if offset else w

    def softcap(self, x: str, cap: float, name: str) -> str:
        """cap * tanh(x), x already divided by cap (folded into the weights before it)."""
        tanh = self.op("Tanh", [x], f"{name}/tanh")
        return self.op("Mul", [tanh, self.const(f"{name}/cap/factor", np.float32(cap))], f"{name}/cap")

    def maybe(self, role: str, layer: int) -> np.ndarray | None:
        """An optional tensor (a bias): read when this config's model has it (ArchSpec.uses), else None."""
        return self.reader.get(self.arch.tensor(role, layer)) if self.arch.uses(role) else None

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """x @ weight.T (+ bias); weight is HF's (out, in)."""
        w = self.g.weight(f"{name}.weight", np.ascontiguousarray(weight.T))
        y = self.op("MatMul", [x, w], name)
        if bias is not None:
            y = self.op("Add", [y, self.g.weight(f"{name}.bias", bias)], f"{name}/bias")
        return y

    def rms_norm(self, x: str, role: str, layer: int | None, name: str, factor: np.ndarray | None = None) -> str:
        """x / sqrt(mean(x^2) + eps) * weight as one SimplifiedLayerNormalization (QNN's RmsNorm).

        Not decomposed: the residual stream carries massive activations at a few positions (the first
        token's reach the hundreds), so a quantized x*x would need a range where every other row's
        squares round to zero."""
        gain = self.gain(role, layer)
        w = self.g.weight(f"{name}.weight", gain if factor is None else gain * factor)  # factor: see attention
        return self.op("SimplifiedLayerNormalization", [x, w], name, axis=-1, epsilon=self.arch.rms_norm_eps,
                       stash_type=1)

    def heads(self, x: str, count: int, name: str) -> str:
        """(1, N, count*hd) -> (1, count, N, hd)."""
        n, hd = self.shape.tokens, self.arch.head_dim
        split = self.op("Reshape", [x, self.shape_const(f"{name}/shape", [1, n, count, hd])], f"{name}/split")
        return self.op("Transpose", [split], f"{name}/heads", perm=[0, 2, 1, 3])

    def cut(self, x: str, start: int, end: int, name: str) -> str:
        """x[..., start:end]."""
        return self.op("Slice", [x, self.shape_const(f"{name}/start", [start]), self.shape_const(f"{name}/end", [end]),
                                 self.shape_const(f"{name}/axis", [-1])], name)

    def rotary(self, x: str, layer: int, name: str) -> str:
        """x*cos + concat(x2, x1)*sin on the first rotary_dim dims of x (1, heads, N, hd), the rest passed on
        (partial rotary); cos/sin (1, N, rotary_dim) of the layer's rope set broadcast over heads."""
        a = self.arch
        rot, (cos, sin) = a.rotary_dim, self.layer_rotary[layer]
        turned = self.cut(x, 0, rot, f"{name}/turned") if a.partial_rotary else x
        first, second = self.cut(turned, 0, rot // 2, f"{name}/x1"), self.cut(turned, rot // 2, rot, f"{name}/x2")
        swapped = self.op("Concat", [second, first], f"{name}/swap", axis=-1)
        out = self.op("Add", [self.op("Mul", [turned, cos], f"{name}/cos"), self.op("Mul", [swapped, sin], f"{name}/sin")],
                      f"{name}/sum" if not a.partial_rotary else f"{name}/rotated")
        if not a.partial_rotary:
            return out
        return self.op("Concat", [out, self.cut(x, rot, a.head_dim, f"{name}/passed")], f"{name}/sum", axis=-1)

    # -- attention ---------------------------------------------------------------------------------
    def attention(self, h: str, i: int, p: str) -> str:
        from onnx import TensorProto as T

        a, g, n, ctx = self.arch, self.g, self.shape.tokens, self.shape.context
        H, kv, hd = a.num_heads, a.num_kv_heads, a.head_dim
        group = H // kv
        ck = self.smoothing.get(i, np.ones((kv, hd), np.float32))  # (kv, hd)
        scale = a.attention_scale if a.attention_scale is not None else 1 / math.sqrt(hd)
        cap = a.softcaps.get("attention")
        # q's factors: K's smoothing, the score scale, 1/cap under soft-capping; k's: 1/K's smoothing. Folded into
        # q_proj's / k_proj's rows, or with a per-head norm after them into its gain (smoothing is then one factor a
        # channel for all heads: see smoothing_factors). Never a Mul by a constant: the HTP would take the factors
        # at 8 bits per tensor, and they span 1e-2..1e2.
        q_factor = np.repeat(ck, group, axis=0) * np.float32(scale / (cap or 1.0))  # (H, hd)
        k_factor = 1 / ck  # (kv, hd)
        q_w, q_b = self.w("q", i), self.maybe("q_bias", i)
        k_w, k_b = self.w("k", i), self.maybe("k_bias", i)
        if not a.qk_norm:
            q_w, q_b = _scaled(q_w, q_b, q_factor.reshape(-1, 1))
            k_w, k_b = _scaled(k_w, k_b, k_factor.reshape(-1, 1))
        q = self.linear(h, q_w, q_b, f"{p}/attn/q_proj")
        k = self.linear(h, k_w, k_b, f"{p}/attn/k_proj")
        v = self.linear(h, self.w("v", i), self.maybe("v_bias", i), f"{p}/attn/v_proj")
        # (1, N, H*hd), (1, N, kv*hd), (1, N, kv*hd) -> (1, heads, N, hd)
        q, k, v = self.heads(q, H, f"{p}/attn/q"), self.heads(k, kv, f"{p}/attn/k"), self.heads(v, kv, f"{p}/attn/v")
        if a.qk_norm:  # RMSNorm over each head's dims, before rotary
            q = self.rms_norm(q, "q_norm", i, f"{p}/attn/q_norm", factor=q_factor[0])
            k = self.rms_norm(k, "k_norm", i, f"{p}/attn/k_norm", factor=k_factor[0])
        if a.layer_rope(i):
            q = self.rotary(q, i, f"{p}/attn/q_rotary")  # (1, H, N, hd)
            k = self.rotary(k, i, f"{p}/attn/k_rotary")  # (1, kv, N, hd)
        past_k, past_v = (g.input(name, T.FLOAT, [1, kv, ctx - n, hd]) for name in STATIC_IO.past_names(i))
        new_k, new_v = STATIC_IO.present_names(i)
        g.node("Identity", [k], [g.output(new_k, T.FLOAT, [1, kv, n, hd])], name=f"{p}/attn/present_key/Identity")
        g.node("Identity", [v], [g.output(new_v, T.FLOAT, [1, kv, n, hd])], name=f"{p}/attn/present_value/Identity")
        keys = self.op("Concat", [past_k, k], f"{p}/attn/keys", axis=2)  # (1, kv, CTX, hd)
        values = self.op("Concat", [past_v, v], f"{p}/attn/values", axis=2)
        q_grouped = self.op("Reshape", [q, self.shape_const(f"{p}/attn/group_shape", [1, kv, group * n, hd])],
                            f"{p}/attn/q_grouped")
        # K^T is the second MatMul input: the HTP takes that one at 8 bits (measured: a 16-bit x 16-bit
        # MatMul errs like 16 x 8 there; swapping the operands measured worse), hence K's smoothing
        keys_t = self.op("Transpose", [keys], f"{p}/attn/keys_t", perm=[0, 1, 3, 2])  # (1, kv, hd, CTX)
        scores = self.op("MatMul", [q_grouped, keys_t], f"{p}/attn/scores")  # (1, kv, G*N, CTX)
        per_head = self.op("Reshape", [scores, self.shape_const(f"{p}/attn/head_shape", [1, H, n, ctx])],
                           f"{p}/attn/per_head")
        if cap:  # Gemma-2: cap * tanh(scores / cap), before the mask
            per_head = self.softcap(per_head, cap, f"{p}/attn/softcap")
        probs = self.op("Softmax", [self.op("Add", [per_head, MASK], f"{p}/attn/masked")], f"{p}/attn/probs", axis=-1)
        probs = self.op("Reshape", [probs, self.shape_const(f"{p}/attn/probs_shape", [1, kv, group * n, ctx])],
                        f"{p}/attn/probs_grouped")
        ctx_out = self.op("MatMul", [probs, values], f"{p}/attn/context")  # (1, kv, G*N, hd)
        ctx_out = self.op("Reshape", [ctx_out, self.shape_const(f"{p}/attn/ctx_shape", [1, H, n, hd])],
                          f"{p}/attn/context_heads")
        ctx_out = self.op("Transpose", [ctx_out], f"{p}/attn/context_t", perm=[0, 2, 1, 3])  # (1, N, H, hd)
        ctx_out = self.op("Reshape", [ctx_out, self.shape_const(f"{p}/attn/merge_shape", [1, n, H * hd])],
                          f"{p}/attn/merged")
        return self.residual_linear(ctx_out, "o", i, f"{p}/attn/o_proj")

    def residual_linear(self, x: str, role: str, i: int, name: str) -> str:
        """A linear whose output joins the residual stream: Granite's residual multiplier folded into its rows."""
        r = self.arch.multiplier("residual") or 1.0
        weight, bias = self.w(role, i), self.maybe(f"{role}_bias", i)
        return self.linear(x, weight * np.float32(r), None if bias is None else bias * np.float32(r), name)

    def mlp(self, h: str, i: int, p: str) -> str:
        gate = self.linear(h, self.w("gate", i), self.maybe("gate_bias", i), f"{p}/mlp/gate_proj")
        up = self.linear(h, self.w("up", i), self.maybe("up_bias", i), f"{p}/mlp/up_proj")
        act = self.activation(gate, f"{p}/mlp/act")
        return self.residual_linear(self.op("Mul", [act, up], f"{p}/mlp/prod"), "down", i, f"{p}/mlp/down_proj")

    def activation(self, x: str, name: str) -> str:
        """The config's hidden_act in plain ops (see edgelm.export.native.activations)."""
        form = ACTIVATIONS[self.arch.activation].plain
        if form == "silu":  # x * sigmoid(x)
            return self.op("Mul", [x, self.op("Sigmoid", [x], f"{name}/sigmoid")], f"{name}/silu")
        if form == "gelu":  # 0.5 x (1 + erf(x / sqrt 2))
            inner = self.op("Erf", [self.op("Mul", [x, self.const(f"{name}/rsqrt2", np.float32(0.5**0.5))],
                                            f"{name}/scaled")], f"{name}/erf")
        else:  # gelu_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = self.op("Mul", [self.op("Mul", [x, x], f"{name}/sq"), x], f"{name}/cube")
            poly = self.op("Add", [x, self.op("Mul", [cube, self.const(f"{name}/c3", np.float32(0.044715))],
                                              f"{name}/c3x3")], f"{name}/poly")
            inner = self.op("Tanh", [self.op("Mul", [poly, self.const(f"{name}/c1", np.float32((2 / math.pi) ** 0.5))],
                                             f"{name}/arg")], f"{name}/tanh")
        one_plus = self.op("Add", [inner, self.const(f"{name}/one", np.float32(1.0))], f"{name}/one_plus")
        half_x = self.op("Mul", [x, self.const(f"{name}/half", np.float32(0.5))], f"{name}/half_x")
        return self.op("Mul", [half_x, one_plus], f"{name}/gelu")

    # -- the model -----------------------------------------------------------------------------
    def layer(self, x: str, i: int) -> str:
        """Decoder layer i on the residual stream x; returns the new residual (`residual_name(i)`)."""
        p = f"/model/layers.{i}"
        attn = self.attention(self.rms_norm(x, "input_norm", i, f"{p}/input_layernorm"), i, p)
        if self.arch.sandwich_norms:  # Gemma: the attention and MLP outputs are normed before the residual
            attn = self.rms_norm(attn, "attn_out_norm", i, f"{p}/attn_out_norm")
        x = self.op("Add", [x, attn], f"{p}/attn_residual")
        down = self.mlp(self.rms_norm(x, "post_norm", i, f"{p}/post_attention_layernorm"), i, p)
        if self.arch.sandwich_norms:
            down = self.rms_norm(down, "mlp_out_norm", i, f"{p}/mlp_out_norm")
        return self.op("Add", [x, down], f"{p}/mlp_residual")

    def build(self, progress=None, segment: int | str | None = None) -> Path:
        """The whole graph, or one segment of it with the same tensor names: layer `segment` (an int: the
        residual in, the residual out) or "head" (the residual in, the logits out)."""
        from onnx import TensorProto as T

        a, g, n, ctx = self.arch, self.g, self.shape.tokens, self.shape.context
        if segment is None:
            layers, first = range(a.num_layers), EMBEDS
        elif segment == "head":
            layers, first = range(0), residual_name(a.num_layers - 1)
        else:
            layers, first = [int(segment)], residual_name(int(segment) - 1) if segment else EMBEDS
        x = g.input(first, T.FLOAT, [1, n, a.hidden_size])
        if layers:  # every rope set's pair in every layer segment: the runs feed them all
            sets = rope_sets(a)
            names = rotary_names(COS, SIN, len(sets))
            for pair in names:
                for name in pair:
                    g.input(name, T.FLOAT, [1, n, a.rotary_dim])
            self.layer_rotary = {i: names[sets.index(a.layer_rope_base(i))] if a.layer_rope(i) else None
                                 for i in layers}
            g.input(MASK, T.FLOAT, [1, 1, n, ctx])
        for i in layers:
            x = self.layer(x, i)
            if progress is not None:
                progress.update(1)
        if segment is not None and segment != "head":
            g.output(x, T.FLOAT, [1, n, a.hidden_size])
            return g.save()
        normed = self.rms_norm(x, "final_norm", None, "/model/norm")
        cap = a.softcaps.get("logits")
        divisor = (a.multiplier("logits") or 1.0) * (cap or 1.0)  # Granite's logits scaling, 1/cap: folded in
        head = self.w("embed" if a.tied_embeddings else "lm_head")
        logits = self.linear(normed, head / np.float32(divisor) if divisor != 1.0 else head, None, "/lm_head")
        del head
        if cap:
            logits = self.softcap(logits, cap, "/lm_head/softcap")
        g.node("Identity", [logits], [g.output(STATIC_IO.logits, T.FLOAT, [1, n, a.vocab_size])],
               name="/lm_head/Identity")
        return g.save()


def residual_name(layer: int) -> str:
    """The residual stream after decoder layer `layer` (the input of the next, or of the head)."""
    return f"/model/layers.{layer}/mlp_residual/out"


def _scaled(weight: np.ndarray, bias: np.ndarray | None, rows: np.ndarray) -> tuple:
    """(weight, name-less bias) with output channel j multiplied by rows[j], in `linear`'s argument order."""
    return weight * rows, None if bias is None else bias * rows[:, 0]


# (1, kv, N, hd): keys as cached: after rotary; in layers without rotary after the k norm, or as projected
KEYS_TENSORS = ("/attn/k_rotary/sum/out", "/attn/k_norm/out", "/attn/k/heads/out")
# Tensors the HTP reads at 8 bits (the second input of an activation x activation MatMul, and what feeds
# it): their ranges are not widened, every step of 256 counts.
EIGHT_BIT_SIDE = (*KEYS_TENSORS, "/attn/keys/out", "/attn/keys_t/out", "/attn/v/heads/out", "/attn/values/out",
                  ".key", ".value")


def keys_tensor(arch: ArchSpec, layer: int) -> str:
    return f"/model/layers.{layer}{KEYS_TENSORS[0 if arch.layer_rope(layer) else 1 if arch.qk_norm else 2]}"


def smoothing_factors(channel_max: dict[str, np.ndarray], arch: ArchSpec, alpha: float, layers=None) -> dict:
    """Per layer ck (kv, hd): K's channels are divided by it so that every channel of every head spans about
    the same range (K is the HTP's 8-bit MatMul side); q's channels are multiplied by it, so q.k, and the
    model, are unchanged. Both land on output channels of q_proj/k_proj, which per-channel weights absorb
    exactly (with q/k norms: their gains, so all heads share the factors). A rotary pair (d, d + rotary_dim/2)
    shares one factor, so rotary still commutes; dims past the rotary ones (partial rotary) and layers without
    rotary have one factor a channel. (V is not smoothed:
    its factors would land on o_proj's input rows, which per-output-channel weights cannot absorb;
    measured on SmolLM2 it did not help.)"""
    out = {}
    for i in range(arch.num_layers) if layers is None else layers:
        k = channel_max[keys_tensor(arch, i)]
        rot = arch.rotary_dim if arch.layer_rope(i) else 0
        pair = np.maximum(k[:, :rot // 2], k[:, rot // 2:rot])
        m = np.concatenate([pair, pair, k[:, rot:]], axis=1)
        if arch.qk_norm:  # folded into the k norm's gain, which every head shares: one factor a channel
            m = np.repeat(m.max(axis=0, keepdims=True), len(m), axis=0)
        out[i] = _flatten(m, alpha)
    return out


def _flatten(channel_max: np.ndarray, alpha: float) -> np.ndarray:
    m = np.maximum(channel_max, 1e-6)
    mean = np.exp(np.log(m).mean())  # one geometric mean over all heads: K and V are quantized per tensor
    return np.clip((m / mean) ** alpha, 1e-2, 1e2).astype(np.float32)


def build_static(arch: ArchSpec, source_path: Path, folder: Path, model_file: str, shape: StaticShape,
                 progress=None, smoothing: dict | None = None, reader=None, segment: int | str | None = None) -> Path:
    """Write the fp32 static graph for `shape` (or one `segment` of it, see StaticDecoderBuilder.build) to
    folder/model_file (+ .data). `reader`: where the weights come from (default the source's safetensors;
    an AwqReader hands them out activation-aware scaled)."""
    reader = reader if reader is not None else SafetensorsReader(source_path)
    builder = StaticDecoderBuilder(arch, reader, folder, model_file, shape, smoothing)
    try:
        return builder.build(progress, segment)
    finally:
        builder.g.close()
