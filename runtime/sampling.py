"""Sampling as pure functions over a (vocab,) float array of logits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgelm.errors import GenerationError


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; top_k 0, top_p 1 and min_p 0 switch those filters off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    min_p: float = 0.0

    def __post_init__(self):
        for name, ok, what in _RULES:
            value = getattr(self, name)
            if not ok(value):
                raise GenerationError(f"{name} must be {what}, not {value!r}")


def _number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# field, check, what it must be (data: one table for the API and the CLI)
_RULES = (
    ("temperature", lambda v: _number(v) and 0 <= v <= 1e6, "a finite number >= 0 (0 = greedy)"),
    ("top_k", lambda v: _integer(v) and v >= 0, "an integer >= 0 (0 = off)"),
    ("top_p", lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    ("repetition_penalty", lambda v: _number(v) and 0 < v <= 1e6, "a finite number > 0 (1 = off)"),
    ("min_p", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1) (0 = off)"),
    ("seed", lambda v: v is None or (_integer(v) and 0 <= v < 1 << 64), "an integer in [0, 2**64) or None"),
)


def repetition_penalty(logits: np.ndarray, previous: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL-style: divide positive logits of seen tokens by `penalty`, multiply negative ones."""
    if penalty == 1.0 or previous.size == 0:
        return logits
    out = logits.copy()
    seen = np.unique(previous)
    vals = out[seen]
    out[seen] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits, set the rest to -inf."""
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of tokens whose probability mass reaches p (nucleus sampling)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits)
    probs = softmax(logits[order])
    keep = np.cumsum(probs) - probs < p  # a token is kept if the mass before it is below p
    keep[0] = True
    out = np.full_like(logits, -np.inf)
    out[order[keep]] = logits[order[keep]]
    return out


def min_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep tokens whose probability is at least p times the most likely token's (min-p sampling)."""
    if p <= 0.0:
        return logits
    floor = np.max(logits) + math.log(p)  # prob_i >= p * prob_max  <=>  logit_i >= logit_max + log p
    return np.where(logits < floor, -np.inf, logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64 (KL divergence and perplexity read it)."""
    z = logits.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def distribution(logits: np.ndarray, config: SamplingConfig, previous: np.ndarray) -> np.ndarray | int:
    """What the next token is drawn from, one position's logits processed as `config` says: the probabilities
    (float64, summing to 1), or a token id where the pick is greedy (temperature 0, or a logit at +inf)."""
    logits = repetition_penalty(logits.astype(np.float32), previous, config.repetition_penalty)
    if config.temperature <= 0.0 or np.isposinf(logits).any():  # greedy; or a penalty that overflowed: all mass there
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / config.temperature
    if not np.isfinite(scaled[np.isfinite(logits)]).all():  # a temperature so small it overflows: T -> 0 is greedy
        return int(np.argmax(logits))
    return softmax(min_p_filter(top_p_filter(top_k_filter(scaled, config.top_k), config.top_p), config.min_p))


def draw(dist: np.ndarray | int, rng: np.random.Generator) -> int:
    """A token from `distribution`'s result."""
    return dist if isinstance(dist, int) else int(rng.choice(dist.size, p=dist))


def sample(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator, previous: np.ndarray) -> int:
    """Pick the next token id from one position's logits."""
    return draw(distribution(logits, config, previous), rng)
