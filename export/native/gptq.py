"""Error-compensating rounding (GPTQ-style) into MatMulNBits' block layout, in numpy.

A linear y = x @ W.T quantized to W_q errs by (W - W_q) x; over calibration inputs X (tokens, K) its squared
error is tr((W - W_q) H (W - W_q)^T) with H = X^T X (the inputs' second moments). GPTQ rounds W one input
column at a time and pushes each column's rounding error onto the columns not yet rounded, in the proportions
H's inverse says they can absorb it (Frantar et al. 2022, the optimal brain surgeon update):

    U = chol(H^-1), upper            (H damped: + half its mean diagonal)
    for column j:                    (in batches of columns, the update of the rest applied once a batch)
        at a block's first column: scale and zero point of the block from the columns as they are now,
                                   chosen to minimise the H-diagonal-weighted error (search_scales)
        q_j = round(w_j)             err_j = (w_j - q_j) / U[j, j]
        w_k -= err_j * U[j, k]       for every k > j

Columns that never see an input (H[j, j] = 0) are zero and rounded as zero. Memory: H in float64 and U in
float32 (K x K: 640 MB and 320 MB at K = 8960, a 1.5B model's down projection), GPTQ_ROWS rows of W at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgelm.export.native.quant import Quantized, half_exact, pack_codes, quantize_row_slices

DAMP = 0.5  # of H's mean diagonal, added to its diagonal (measured: see docs/exporting.md)
BATCH = 128  # columns whose updates to the rest are applied together
GPTQ_ROWS = 16384  # rows rounded at a time (their float32 copy and codes: 2 x 100 MB at K = 1536)
SHRINK = np.linspace(1.0, 0.55, 19)  # range factors the scale search tries (1 = min/max)
PARALLEL_FROM = 1 << 16  # block elements from which search_scales splits its rows over two threads
_POOL = ThreadPoolExecutor(2, thread_name_prefix="edgelm-gptq")


def search_scales(w: np.ndarray, h: np.ndarray | None, bits: int, symmetric: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Scale (N,) and integer zero point (N,) per row of a block `w` (N, B) minimising sum_j h_j (w - dq)^2
    (h None: unweighted). Each candidate range (min/max shrunk by SHRINK) gets its zero point by rounding and
    then its least-squares scale for the codes it gives; the best candidate per row is kept. Large blocks are
    searched in two halves of rows at once (numpy's element-wise work is single-threaded; rows are independent)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    h = np.ones(w.shape[1], np.float32) if h is None else np.maximum(np.asarray(h, np.float32), 1e-12)
    if w.size < PARALLEL_FROM:
        return _search_rows(w, h, bits, symmetric)
    half = len(w) // 2
    parts = list(_POOL.map(lambda rows: _search_rows(rows, h, bits, symmetric), (w[:half], w[half:])))
    return np.concatenate([parts[0][0], parts[1][0]]), np.concatenate([parts[0][1], parts[1][1]])


def _search_rows(w: np.ndarray, h: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    qmax = (1 << bits) - 1
    best_err = np.full(w.shape[0], np.inf, np.float32)
    best_scale = np.ones(w.shape[0], np.float32)
    best_zp = np.zeros(w.shape[0], np.float32)
    hw = h * w
    if symmetric:
        idx = np.abs(w).argmax(axis=1)
        extreme = w[np.arange(len(w)), idx]  # the value of largest magnitude maps to code 0 (-2^(bits-1))
    else:
        lo, hi = np.minimum(w.min(axis=1), 0.0), np.maximum(w.max(axis=1), 0.0)
    for f in SHRINK:
        scale = extreme * f / -float(1 << (bits - 1)) if symmetric else (hi - lo) * f / qmax
        scale = half_exact(np.where(scale == 0, 1.0, scale))
        zp = (np.full(len(w), float(1 << (bits - 1)), np.float32) if symmetric
              else np.clip(np.rint(-lo * f / scale), 0, qmax))
        q = _codes(w, scale, zp, qmax)
        # least-squares scale for these codes: argmin_s sum h (w - s q)^2 = sum(h w q) / sum(h q q)
        num, den = (hw * q).sum(axis=1), (q * q) @ h
        fitted = np.where(den > 0, num / np.where(den > 0, den, 1.0), scale).astype(np.float32)
        fitted = half_exact(np.where(fitted == 0, scale, fitted))
        for s, codes in ((scale, q), (fitted, _codes(w, fitted, zp, qmax))):
            residual = codes * s[:, None]
            residual -= w
            residual *= residual
            err = residual @ h
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale = np.where(better, s, best_scale)
            best_zp = np.where(better, zp, best_zp)
    return best_scale, best_zp


def _codes(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, qmax: int) -> np.ndarray:
    """Signed codes (code - zero point) of `w` (N, B) at per-row `scale` and `zp`."""
    q = w / scale[:, None]
    np.rint(q, out=q)
    q += zp[:, None]
    np.clip(q, 0, qmax, out=q)
    q -= zp[:, None]
    return q


def _round_column(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, dequantized values) of one column (N,) with per-row scale and zero point."""
    codes = np.clip(np.rint(w / scale) + zp, 0, qmax)
    return codes, (codes - zp) * scale


def gptq(weight: np.ndarray, hessian: np.ndarray, bits: int, block_size: int, symmetric: bool,
         damp: float | None = None) -> Quantized:
    """`weight` (N, K) rounded column by column against `hessian` (K, K) = X^T X, in blocks of `block_size`
    columns (each block one scale and zero point per row), packed as MatMulNBits takes it."""
    n, k = weight.shape
    return gptq_rows(lambda i, j: weight[i:j], n, k, hessian, bits, block_size, symmetric, damp)


def gptq_rows(rows, n: int, k: int, hessian: np.ndarray, bits: int, block_size: int, symmetric: bool,
              damp: float | None = None) -> Quantized:
    """gptq of an (n, k) weight read by `rows(start, stop)`, GPTQ_ROWS rows at a time (rows are independent
    given H: one factorisation serves them all; a 151936-row lm_head is never whole in float32)."""
    diag = np.diag(hessian).astype(np.float64)
    dead = diag <= 0
    diag[dead] = 1.0
    # the damped float64 H is made in the call and held by it alone (freed there: two K x K arrays at a time)
    u = _upper_cholesky_of_inverse(_damped(hessian, dead, diag, DAMP if damp is None else damp))
    return quantize_row_slices(
        rows, n, k, bits, block_size, symmetric, chunk=GPTQ_ROWS,
        rounder=lambda w, b, blk, sym: _gptq_chunk(np.array(w, dtype=np.float32), u, diag, dead, b, blk, sym))


def _gptq_chunk(w: np.ndarray, u: np.ndarray, diag: np.ndarray, dead: np.ndarray, bits: int, block_size: int,
                symmetric: bool) -> Quantized:
    n, k = w.shape
    qmax = (1 << bits) - 1
    w[:, dead] = 0.0
    k_blocks = -(-k // block_size)
    codes = np.zeros((n, k_blocks * block_size), np.float32)
    scales = np.ones((n, k_blocks), np.float32)
    zps = np.zeros((n, k_blocks), np.float32)
    batch = max(BATCH // block_size, 1) * block_size  # a batch holds whole blocks
    for i1 in range(0, k, batch):
        i2 = min(i1 + batch, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2].astype(np.float32)
        for i in range(i2 - i1):
            col = i1 + i
            if col % block_size == 0:  # a new block: its scale from the columns as the updates left them
                end = min(i + block_size, i2 - i1)
                b = col // block_size
                scales[:, b], zps[:, b] = search_scales(w1[:, i:end], diag[col:col + end - i].astype(np.float32),
                                                        bits, symmetric)
            b = col // block_size
            q, dq = _round_column(w1[:, i], scales[:, b], zps[:, b], qmax)
            codes[:, col] = q
            e = (w1[:, i] - dq) / u1[i, i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        if i2 < k:
            w[:, i2:] -= err1 @ u[i1:i2, i2:].astype(np.float32)
    codes[:, k:] = zps.repeat(block_size, axis=1)[:, k:]  # padding dequantizes to zero
    codes = codes.reshape(n, k_blocks, block_size)
    zero_points = None if symmetric else pack_codes(zps.astype(np.uint8), bits).reshape(-1)
    return Quantized(pack_codes(codes.astype(np.uint8), bits), scales.reshape(-1), zero_points, n, k)


def _damped(hessian: np.ndarray, dead: np.ndarray, diag: np.ndarray, damp: float) -> np.ndarray:
    """H as float64, dead channels' diagonal 1, plus `damp` x its mean diagonal on the diagonal."""
    h = np.array(hessian, dtype=np.float64)
    idx = np.diag_indices(len(h))
    h[idx] = diag + damp * diag.mean()
    return h


def _upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    """U upper-triangular with H^-1 = U^T U (float32), damping more while H is not positive definite.

    With J the order-reversing permutation and J H J = M M^T (Cholesky, M lower), H^-1 = J M^-T M^-1 J, so
    U = J M^-1 J: one Cholesky and one triangular inverse, no general inverse and no second factorisation.
    Takes the caller's damped copy `h` and drops it once reversed: at K = 8960 each K x K array is 640 MB."""
    extra = 0.0
    flipped = np.ascontiguousarray(h[::-1, ::-1])
    del h
    for _ in range(8):
        try:
            if extra:
                flipped[np.diag_indices(len(flipped))] += extra
            lower = np.linalg.cholesky(flipped)
            break
        except np.linalg.LinAlgError:
            extra = max(extra * 10, 1e-6 * float(np.diag(flipped).mean()))
    else:
        raise np.linalg.LinAlgError("the calibration inputs' second moments stay singular after damping")
    del flipped
    lower = lower.astype(np.float32)  # the inverse in float32, as the rounding loop uses it (damped H: cond <~ 2K)
    inv = np.zeros_like(lower)
    _invert_lower(lower, inv)
    del lower
    return np.ascontiguousarray(inv[::-1, ::-1])


def _invert_lower(lower: np.ndarray, out: np.ndarray) -> None:
    """out = lower^-1 for a lower-triangular `lower`, by halves: [[A, 0], [C, D]]^-1 = [[A^-1, 0],
    [-D^-1 C A^-1, D^-1]] (matrix products only, so BLAS does the work)."""
    n = len(lower)
    if n <= 128:
        out[...] = np.linalg.inv(lower)
        return
    m = n // 2
    _invert_lower(lower[:m, :m], out[:m, :m])
    _invert_lower(lower[m:, m:], out[m:, m:])
    out[m:, :m] = -(out[m:, m:] @ (lower[m:, :m] @ out[:m, :m]))


def quantize_weighted(weight: np.ndarray, importance: np.ndarray | None, bits: int, block_size: int,
                      symmetric: bool) -> Quantized:
    """Round to nearest, each block's scale and zero point searched against `importance` (K,) (the inputs'
    mean squares; None: unweighted). For linears without calibration inputs (a tied vocabulary table)."""
    n, k = weight.shape
    k_blocks = -(-k // block_size)
    qmax = (1 << bits) - 1
    codes = np.zeros((n, k_blocks, block_size), np.float32)
    scales = np.ones((n, k_blocks), np.float32)
    zps = np.zeros((n, k_blocks), np.float32)
    for b in range(k_blocks):
        cols = slice(b * block_size, min((b + 1) * block_size, k))
        w = np.asarray(weight[:, cols], dtype=np.float32)
        s, z = search_scales(w, None if importance is None else importance[cols], bits, symmetric)
        scales[:, b], zps[:, b] = s, z
        codes[:, b, : w.shape[1]] = np.clip(np.rint(w / s[:, None]) + z[:, None], 0, qmax)
        codes[:, b, w.shape[1]:] = z[:, None]
    zero_points = None if symmetric else pack_codes(zps.astype(np.uint8), bits).reshape(-1)
    return Quantized(pack_codes(codes.astype(np.uint8), bits), scales.reshape(-1), zero_points, n, k)


def searched_row_slices(rows, n: int, k: int, bits: int, block_size: int, symmetric: bool) -> Quantized:
    """quantize_weighted (unweighted) of an (n, k) weight read by `rows(start, stop)` a chunk of rows at a time."""
    return quantize_row_slices(rows, n, k, bits, block_size, symmetric,
                               rounder=lambda w, b, blk, sym: quantize_weighted(w, None, b, blk, sym))
