"""The generation loop: prefill the prompt, then sample and feed one token at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.decoder import Decoder
from edgelm.runtime.sampling import SamplingConfig, sample

# prompt tokens a prefill run when a generation can be cancelled: a cancel waits for one run at most (static
# decoders run their own chunk: `cancel_step`)
PREFILL_CHUNK = 256

# why a generation ended (OpenAI's names where it has one; its "length" covers both of ours)
STOP, LENGTH, CONTEXT_FULL, CANCELLED = "stop", "length", "context_full", "cancelled"


class Cancel(Protocol):
    """What a generation polls to learn it should end: a threading.Event fits."""

    def is_set(self) -> bool: ...


@dataclass
class Outcome:
    """Filled in as a generation runs: why it ended and how much of the prompt the cache already held."""

    finish_reason: str | None = None
    cached_tokens: int = 0
    prefilled_tokens: int = 0


def generate_ids(
    decoder: Decoder,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    stop_ids: Iterable[int] = (),
    cancel: Cancel | None = None,
    reuse: bool = False,
    outcome: Outcome | None = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids; stops early at a stop id (which is not yielded).

    `reuse`: keep the cached keys/values of the longest common prefix of `prompt_ids` and the tokens the
    decoder holds (the previous turn of a chat), and prefill only the rest. `cancel`: polled between
    prefill runs and before each token; a set one ends the generation (finish reason "cancelled")."""
    if not prompt_ids:
        raise GenerationError("the prompt is empty; give at least one token")
    budget = decoder.context_length - len(prompt_ids)
    if budget <= 0:
        raise GenerationError(
            f"prompt of {len(prompt_ids)} tokens does not fit the context length {decoder.context_length}"
        )
    outcome = outcome if outcome is not None else Outcome()
    stop = set(stop_ids)
    rng = np.random.default_rng(sampling.seed)
    history = np.asarray(prompt_ids, dtype=np.int64)
    logits = _prefill(decoder, list(prompt_ids), cancel, reuse, outcome)
    if logits is None:
        return
    steps = min(max_new_tokens, budget)
    for step in range(steps):
        token = sample(logits, sampling, rng, history)  # pick the next token
        if token in stop:  # end of sequence
            outcome.finish_reason = STOP
            return
        yield token
        history = np.append(history, token)
        if step == steps - 1 or len(history) >= decoder.context_length:  # the last one asked for, or a full cache
            outcome.finish_reason = LENGTH if step + 1 == max_new_tokens else CONTEXT_FULL
            return
        if cancel is not None and cancel.is_set():
            outcome.finish_reason = CANCELLED
            return
        logits = _forward(decoder, [token])  # decode: one token through the cache (not after the last one)


def _prefill(decoder, prompt: list[int], cancel: Cancel | None, reuse: bool, outcome: Outcome):
    """Logits after the prompt, or None when cancelled. The cache keeps what it shares with the prompt when
    `reuse` (at least one token is run: its logits are needed)."""
    keep = min(_common(decoder.tokens, prompt), len(prompt) - 1) if reuse else 0
    decoder.truncate(keep)
    keep = len(decoder.tokens)  # a longrope cache may keep less (Decoder._keepable)
    outcome.cached_tokens, outcome.prefilled_tokens = keep, len(prompt) - keep
    rest = prompt[keep:]
    # longrope: the run that passes the switch re-runs the whole sequence (Decoder.forward); chunks before it
    # would be run twice, so a prompt that passes it goes in one run
    crossing = (switch := getattr(decoder, "rope_switch", None)) is not None and keep <= switch < len(prompt)
    step = getattr(decoder, "cancel_step", PREFILL_CHUNK) if cancel is not None and not crossing else len(rest)
    logits = None
    for start in range(0, len(rest), step):
        if cancel is not None and cancel.is_set():
            outcome.finish_reason = CANCELLED
            return None
        logits = _forward(decoder, rest[start:start + step])
    return logits


def _forward(decoder, ids: list[int]) -> np.ndarray:
    """decoder.forward; after a failure the cache is emptied (a run may have stopped half-way)."""
    try:
        return decoder.forward(ids)
    except BaseException:
        decoder.truncate(0)
        raise


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
