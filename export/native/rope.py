"""Rotary position caches (cos, sin), each (max_positions, head_dim / 2), as GroupQueryAttention takes them."""

from __future__ import annotations

import math

import numpy as np


def inv_frequencies(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type")
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        return _llama3(inv, scaling)
    from edgelm.errors import ExportError

    raise ExportError(f"rope scaling {kind!r} is not supported by the native builder; use --backend optimum")


def _llama3(inv: np.ndarray, s: dict) -> np.ndarray:
    """Llama 3.1+ frequency-dependent scaling: long wavelengths slowed by `factor`, short ones kept."""
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old / wavelen - low) / (high - low)
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    mid = (wavelen <= old / low) & (wavelen >= old / high)
    return np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)


def rotary_caches(head_dim: int, positions: int, theta: float, scaling: dict | None):
    freqs = np.outer(np.arange(positions, dtype=np.float64), inv_frequencies(head_dim, theta, scaling))
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)
