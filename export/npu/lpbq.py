"""4-bit linear weights the HTP takes: low-power block quantization (LPBQ), written as plain QDQ.

Each linear weight W (K, N) of the QDQ graph gets blocks of `block` input rows with their own scale, but
the block scales are themselves quantized: a float scale per output channel times a small integer per
block. QNN's HTP runs exactly this form (onnxruntime-qnn fuses the pattern into one MatMul):

    block ints   uint8 (K/block, N) ─ DequantizeLinear(scale = per-channel float (N,), axis 1) ─┐
                                                                                                  │ block scales
    W int4 (K, N) ─────────────────── DequantizeLinear(axis 0, block_size = block) <──────────────┘ (K/block, N)
                                        └─> MatMul input 1

    S[b, n] = channel[n] * ints[b, n],  ints in 1..15 (4-bit, the HTP's block-scale width for int4 weights)
    W_int4[k, n] = clip(round(W[k, n] / S[k // block, n]), -8, 7)

The CPU EP computes the same dequantized weights from the same nodes, so the CPU and the HTP run one
model. The integer block scale is chosen per block as the one (of its two neighbours around the exact
ratio) that rounds that block's weights with the smaller squared error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.errors import QuantizationError
from edgelm.export.native.quant import pack_codes

INT4 = (-8, 7)
BLOCK_INTS = 15  # 4-bit unsigned block scales, 0 excluded


def lpbq(weight: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int4 codes (K, N) as int8, block ints (K/block, N) uint8, channel scales (N,) float32) for `weight`
    (K, N): dequantized, codes * channel * ints (per block) approximates `weight`."""
    k, n = weight.shape
    if k % block:
        raise QuantizationError(f"LPBQ needs the input size {k} to be a multiple of the block size {block}")
    blocks = weight.reshape(k // block, block, n).astype(np.float32)
    wanted = np.abs(blocks).max(axis=1) / INT4[1]  # (K/block, N): the float block scale
    channel = np.maximum(wanted.max(axis=0) / BLOCK_INTS, np.finfo(np.float32).tiny)  # (N,)
    ratio = wanted / channel
    best_err = best_int = None
    for candidate in (np.floor(ratio), np.ceil(ratio)):  # each block keeps the neighbour that rounds it better
        ints = np.clip(candidate, 1, BLOCK_INTS)
        scale = (ints * channel)[:, None, :]
        err = ((np.clip(np.rint(blocks / scale), *INT4) * scale - blocks) ** 2).sum(axis=1)
        if best_err is None:
            best_err, best_int = err, ints
        else:
            better = err < best_err
            best_err, best_int = np.where(better, err, best_err), np.where(better, ints, best_int)
    scale = (best_int * channel)[:, None, :]
    codes = np.clip(np.rint(blocks / scale), *INT4).astype(np.int8).reshape(k, n)
    return codes, best_int.astype(np.uint8), channel.astype(np.float32)


def dequantize(codes: np.ndarray, ints: np.ndarray, channel: np.ndarray, block: int) -> np.ndarray:
    """The float weight the graph's two DequantizeLinear nodes produce (for checks and tests)."""
    scale = np.repeat(ints.astype(np.float32) * channel, block, axis=0)
    return codes.astype(np.float32) * scale


def int4_tensor(name: str, values: np.ndarray):
    """An INT4 TensorProto (two values a byte, low nibble first, as ONNX packs them)."""
    from onnx import TensorProto

    tensor = TensorProto(name=name, data_type=TensorProto.INT4, dims=list(values.shape))
    tensor.raw_data = pack_codes(values.astype(np.int8).reshape(-1).astype(np.uint8) & 0x0F, 4).tobytes()
    return tensor


MIN_BLOCK = 16


def block_for(k: int, block: int) -> int | None:
    """The block for an input size `k`: `block`, else the largest power-of-two fraction of it (>= 16) that
    divides k; None when none does (the weight then stays 8-bit per channel)."""
    while block >= MIN_BLOCK:
        if k % block == 0:
            return block
        block //= 2
    return None


def apply_lpbq(qdq: Path, fp32: Path, out: Path, block: int, keep_8bit: tuple[str, ...] = ()) -> dict[str, int]:
    """Rewrite the per-channel weight DequantizeLinear of every MatMul in `qdq` (weights read in float from
    `fp32`, the graph it was quantized from) as LPBQ int4; save to `out` (+ `out`.data). Weights whose name
    contains one of `keep_8bit`, or whose input size no block divides (`block_for`), stay 8-bit per channel.
    Returns weight name -> its block (0: kept at 8 bits)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor

    model = onnx.load(str(qdq), load_external_data=True)
    source = onnx.load(str(fp32), load_external_data=False)
    floats = {t.name: t for t in source.graph.initializer}
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    matmul_weights = {n.input[1] for n in graph.node if n.op_type == "MatMul"}
    done, drop, new_nodes = {}, set(), []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in matmul_weights:
            new_nodes.append(node)
            continue
        quantized = node.input[0]
        original = quantized.removesuffix("_quantized")
        if quantized not in inits or original not in floats:
            new_nodes.append(node)
            continue
        tensor = floats[original]
        size = block_for(int(tensor.dims[0]), block)
        if any(part in original for part in keep_8bit) or size is None:
            done[original] = 0
            new_nodes.append(node)
            continue
        load_external_data_for_tensor(tensor, str(fp32.parent))
        codes, ints, channel = lpbq(numpy_helper.to_array(tensor), size)
        drop.update(node.input)
        names = {key: f"{original}_lpbq_{key}" for key in ("codes", "ints", "channel", "ints_zero", "codes_zero",
                                                               "block_scales")}
        graph.initializer.extend([
            int4_tensor(names["codes"], codes),
            numpy_helper.from_array(ints, names["ints"]),
            numpy_helper.from_array(channel, names["channel"]),
            numpy_helper.from_array(np.zeros(channel.shape, np.uint8), names["ints_zero"]),
            int4_tensor(names["codes_zero"], np.zeros(ints.shape, np.int8)),
        ])
        new_nodes.append(helper.make_node("DequantizeLinear", [names["ints"], names["channel"], names["ints_zero"]],
                                          [names["block_scales"]], name=f"{original}_lpbq_scales", axis=1))
        new_nodes.append(helper.make_node("DequantizeLinear", [names["codes"], names["block_scales"],
                                                               names["codes_zero"]],
                                          [node.output[0]], name=node.name, axis=0, block_size=size))
        done[original] = size
    still_used = {i for n in new_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in drop or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{out.name}.data", size_threshold=1024)
    return done
