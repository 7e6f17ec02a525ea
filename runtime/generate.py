"""The generation loop: prefill the prompt, then sample and feed one token at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Iterable

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.decoder import Decoder
from edgelm.runtime.sampling import SamplingConfig, sample


def generate_ids(
    decoder: Decoder,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    stop_ids: Iterable[int] = (),
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids; stops early at a stop id (which is not yielded)."""
    if not prompt_ids:
        raise GenerationError("the prompt is empty; give at least one token")
    budget = decoder.context_length - len(prompt_ids)
    if budget <= 0:
        raise GenerationError(
            f"prompt of {len(prompt_ids)} tokens does not fit the context length {decoder.context_length}"
        )
    stop = set(stop_ids)
    rng = np.random.default_rng(sampling.seed)
    history = np.asarray(prompt_ids, dtype=np.int64)
    decoder.reset()
    logits = decoder.forward(prompt_ids)  # prefill: the whole prompt in one pass
    steps = min(max_new_tokens, budget)
    for step in range(steps):
        token = sample(logits, sampling, rng, history)  # pick the next token
        if token in stop:  # end of sequence
            return
        yield token
        history = np.append(history, token)
        if step == steps - 1 or len(history) >= decoder.context_length:  # the last one asked for, or a full cache
            return
        logits = decoder.forward([token])  # decode: one token through the cache (not after the last one)
