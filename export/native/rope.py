"""Rotary position caches (cos, sin), each (positions, rotary_dim / 2), as GroupQueryAttention takes them.

longrope (Phi-3.5/4-mini; "su" is its old name) has two frequency sets. transformers rotates a forward pass
with the short factors while its sequence (largest position + 1) is at most `original_max_position_embeddings`
(the switch) and with the long ones past it, and scales cos and sin by an attention factor either way. Its
caches are the two sets stacked, (2 x positions, rotary_dim / 2): short rows first; the graph slices the half
for the run's total length (`DecoderBuilder.longrope_caches`)."""

from __future__ import annotations

import math

import numpy as np

from edgelm.export.arch.contract import rope_kind

LONGROPE = ("longrope", "su")


def inv_frequencies(head_dim: int, theta: float, scaling: dict | None, factors=None) -> np.ndarray:
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    kind = rope_kind(scaling)
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        return _llama3(inv, scaling)
    if kind in LONGROPE:
        return inv / np.asarray(factors, dtype=np.float64)
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


def rope_switch(scaling: dict | None) -> int | None:
    """longrope: the total length past which the long factors apply (None: one frequency set)."""
    return int(scaling["original_max_position_embeddings"]) if rope_kind(scaling) in LONGROPE else None


def longrope_attention_factor(scaling: dict) -> float:
    """The factor on cos and sin: the config's, else transformers' default from the context extension
    (max_position_embeddings / original_max_position_embeddings)."""
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    old = scaling["original_max_position_embeddings"]
    factor = scaling["max_position_embeddings"] / old
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(old))


def _cos_sin(head_dim: int, positions: int, theta: float, scaling: dict | None, factors=None, gain: float = 1.0):
    freqs = np.outer(np.arange(positions, dtype=np.float64), inv_frequencies(head_dim, theta, scaling, factors))
    return (np.cos(freqs) * gain).astype(np.float32), (np.sin(freqs) * gain).astype(np.float32)


def rotary_caches(head_dim: int, positions: int, theta: float, scaling: dict | None):
    """The graph's caches: (positions, head_dim / 2) each; longrope: short then long, (2 x positions, ...)."""
    if rope_switch(scaling) is None:
        return _cos_sin(head_dim, positions, theta, scaling)
    gain = longrope_attention_factor(scaling)
    short, long = (_cos_sin(head_dim, positions, theta, scaling, scaling[k], gain)
                   for k in ("short_factor", "long_factor"))
    return np.concatenate([short[0], long[0]]), np.concatenate([short[1], long[1]])


def rotary_for_length(head_dim: int, positions: int, theta: float, scaling: dict | None, length: int | None = None):
    """`positions` rows of the caches a forward pass over `length` positions (default: `positions`) rotates
    with (longrope: the factors for that length)."""
    switch = rope_switch(scaling)
    if switch is None:
        return _cos_sin(head_dim, positions, theta, scaling)
    key = "long_factor" if (length or positions) > switch else "short_factor"
    return _cos_sin(head_dim, positions, theta, scaling, scaling[key], longrope_attention_factor(scaling))
