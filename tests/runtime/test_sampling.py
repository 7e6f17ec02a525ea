"""Sampling functions: pure, deterministic under a seed, and each filter does what it says."""

import numpy as np
import pytest

from edgelm.runtime.sampling import (
    SamplingConfig,
    repetition_penalty,
    sample,
    softmax,
    top_k_filter,
    top_p_filter,
)

LOGITS = np.array([1.0, 3.0, 2.0, -1.0, 0.5], dtype=np.float32)


def test_greedy_is_argmax():
    assert sample(LOGITS, SamplingConfig(), np.random.default_rng(0), np.array([], dtype=np.int64)) == 1


def test_top_k_keeps_k_largest():
    out = top_k_filter(LOGITS, 2)
    assert np.isfinite(out).sum() == 2 and set(np.flatnonzero(np.isfinite(out))) == {1, 2}


def test_top_p_keeps_smallest_nucleus():
    probs = softmax(LOGITS)
    out = top_p_filter(LOGITS, 0.7)
    kept = set(np.flatnonzero(np.isfinite(out)))
    assert kept == {1, 2}  # p(1) = 0.63 < 0.7, so the second-best is needed
    assert probs[1] < 0.7 < probs[1] + probs[2]
    assert set(np.flatnonzero(np.isfinite(top_p_filter(LOGITS, 0.5)))) == {1}


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    out = repetition_penalty(LOGITS, np.array([1, 3]), 2.0)
    assert out[1] == pytest.approx(1.5) and out[3] == pytest.approx(-2.0)
    assert out[0] == LOGITS[0]
    assert LOGITS[1] == 3.0  # input untouched


def test_sampling_is_seeded_and_respects_filters():
    cfg = SamplingConfig(temperature=1.0, top_k=2, seed=7)
    draws = [sample(LOGITS, cfg, np.random.default_rng(7), np.array([], np.int64)) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw
    rng = np.random.default_rng(0)
    many = {sample(LOGITS, cfg, rng, np.array([], np.int64)) for _ in range(200)}
    assert many == {1, 2}
