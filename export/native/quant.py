"""Block-wise weight quantization into MatMulNBits' layout (numpy, one weight at a time).

For a linear layer with HF weight W of shape (N, K) (out, in), MatMulNBits takes
  B       uint8 (N, k_blocks, block_size * bits / 8)   codes, two 4-bit codes a byte (low nibble first)
  scales  float (N * k_blocks)
  zero_points (asymmetric only) uint8, packed like B, one per block
and computes A @ dequant(B)^T, dequant = (code - zero_point) * scale, zero_point = 2^(bits-1) if absent.

Scales are chosen as float16 values (`half_exact`, before any code is rounded against them) so a float32 package
stores them in 2 bytes and casts them once at load (onnxruntime folds the Cast before MatMulNBits prepacks): at
block 32 that is 1/16 of a byte per weight, 10% of an int4 linear. A tensor with a scale float16 cannot hold
(subnormal, overflow) keeps float32 scales (`half_storable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantized:
    codes: np.ndarray  # uint8 (N, k_blocks, blob)
    scales: np.ndarray  # float32 (N * k_blocks,)
    zero_points: np.ndarray | None  # uint8 packed, asymmetric only
    n: int
    k: int


HALF_TINY = np.float32(2.0 ** -14)  # float16's smallest normal value


def half_exact(scale: np.ndarray) -> np.ndarray:
    """`scale` (float32) rounded to the nearest float16 wherever that is a normal float16; other values stay."""
    rounded = np.asarray(scale, np.float32).astype(np.float16).astype(np.float32)
    held = np.isfinite(rounded) & (np.abs(rounded) >= HALF_TINY)
    return np.where(held, rounded, scale).astype(np.float32)


def half_storable(scales: np.ndarray) -> bool:
    """Whether every scale is exactly a float16 value (then stored as float16 without loss)."""
    with np.errstate(over="ignore"):
        return bool(np.array_equal(scales.astype(np.float16).astype(np.float32), scales))


ROWS_PER_CHUNK = 4096  # bounds the float temporaries to a few rows of the weight at a time


def quantize_blockwise(weight: np.ndarray, bits: int, block_size: int, symmetric: bool) -> Quantized:
    """RTN quantization of `weight` (N, K) in blocks of `block_size` along K, a chunk of rows at a time."""
    n, k = weight.shape
    return quantize_row_slices(lambda i, j: weight[i:j], n, k, bits, block_size, symmetric)


def quantize_row_slices(rows, n: int, k: int, bits: int, block_size: int, symmetric: bool,
                        rounder=None, chunk: int = ROWS_PER_CHUNK) -> Quantized:
    """quantize_blockwise of an (n, k) weight read by `rows(start, stop)` a chunk at a time (a vocabulary table
    read from the file by rows is never whole in memory); `rounder(rows, bits, block_size, symmetric)` rounds
    a chunk (default min/max) of at most `chunk` rows."""
    rounder = rounder or _quantize_rows
    parts = [rounder(rows(i, min(i + chunk, n)), bits, block_size, symmetric) for i in range(0, n, chunk)]
    zps = [p.zero_points for p in parts]
    return Quantized(
        np.concatenate([p.codes for p in parts]),
        np.concatenate([p.scales for p in parts]),
        None if zps[0] is None else np.concatenate(zps),
        n,
        k,
    )


def _quantize_rows(weight: np.ndarray, bits: int, block_size: int, symmetric: bool) -> Quantized:
    n, k = weight.shape
    codes, scale, zp = _round(weight, bits, block_size, symmetric)
    zero_points = None if symmetric else pack_codes(zp.astype(np.uint8).reshape(n, -1), bits).reshape(-1)
    return Quantized(pack_codes(codes.astype(np.uint8), bits), scale.reshape(-1), zero_points, n, k)


def _round(weight: np.ndarray, bits: int, block_size: int, symmetric: bool):
    """Codes (N, k_blocks, block), scales and zero points (N, k_blocks, 1) of `weight` (N, K), all float32
    (codes and zero points hold integers)."""
    n, k = weight.shape
    k_blocks = -(-k // block_size)
    padded = np.zeros((n, k_blocks * block_size), dtype=np.float32)
    padded[:, :k] = weight
    blocks = padded.reshape(n, k_blocks, block_size)  # (N, k_blocks, block)
    qmax = (1 << bits) - 1
    if symmetric:
        zp = np.float32(1 << (bits - 1))
        # The value of largest magnitude maps exactly to code 0 (-zero): the whole signed range is used.
        idx = np.abs(blocks).argmax(axis=-1)[..., None]
        scale = np.take_along_axis(blocks, idx, axis=-1) / -float(1 << (bits - 1))
    else:
        lo = np.minimum(blocks.min(axis=-1, keepdims=True), 0.0)
        hi = np.maximum(blocks.max(axis=-1, keepdims=True), 0.0)
        scale = (hi - lo) / qmax
    scale[scale == 0] = 1.0
    scale = half_exact(scale)
    if not symmetric:
        zp = np.clip(np.rint(-lo / scale), 0, qmax)
    codes = np.rint(blocks / scale)
    codes += zp
    np.clip(codes, 0, qmax, out=codes)
    return codes, scale.astype(np.float32), zp


def fake_quantize(weight: np.ndarray, bits: int, block_size: int, symmetric: bool) -> np.ndarray:
    """The (N, K) float weight that quantize_blockwise(weight, ...) stands for, without packing."""
    n, k = weight.shape
    codes, scale, zp = _round(weight, bits, block_size, symmetric)
    codes -= zp
    codes *= scale
    return codes.reshape(n, -1)[:, :k]


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack the last axis: 8-bit codes as they are, 4-bit codes two a byte, low nibble first."""
    if bits == 8:
        return codes
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def dequantize(q: Quantized, bits: int, block_size: int) -> np.ndarray:
    """The (N, K) float weight that `q` stands for (for tests)."""
    codes = q.codes
    if bits == 4:
        codes = np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(codes.shape[0], codes.shape[1], -1)
    k_blocks = codes.shape[1]
    if q.zero_points is None:
        zp = np.full((q.n, k_blocks, 1), 1 << (bits - 1), np.float32)
    else:
        z = q.zero_points.reshape(q.n, -1)
        if bits == 4:
            z = np.stack([z & 0x0F, z >> 4], axis=-1).reshape(q.n, -1)
        zp = z[:, :k_blocks, None].astype(np.float32)
    w = (codes[..., :block_size].astype(np.float32) - zp) * q.scales.reshape(q.n, k_blocks, 1)
    return w.reshape(q.n, -1)[:, : q.k]
