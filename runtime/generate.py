"""The generation loop: prefill the prompt, then sample and feed one token at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.decoder import Decoder, shared_prefix
from edgelm.runtime.sampling import SamplingConfig, sample
from edgelm.runtime.speculative import Speculation, verify

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
    speculation: Speculation | None = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids; stops early at a stop id (which is not yielded).

    `reuse`: keep the cached keys/values of the longest common prefix of `prompt_ids` and the tokens the
    decoder holds (the previous turn of a chat), and prefill only the rest. `cancel`: polled between
    prefill runs and before each token; a set one ends the generation (finish reason "cancelled").
    `speculation`: draft tokens and verify them k at a time (edgelm.runtime.speculative); the same tokens as
    plain decoding (greedy), the same distribution (sampling); its counts land in `speculation.stats`."""
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
    history = list(prompt_ids)
    logits = _prefill(decoder, list(prompt_ids), cancel, reuse, outcome)
    if logits is None:
        return
    steps = min(max_new_tokens, budget)
    produced = 0

    def ended() -> bool:  # after a token is out: the last one asked for, a full cache, or a cancel
        if produced == steps or len(history) >= decoder.context_length:
            outcome.finish_reason = LENGTH if produced == max_new_tokens else CONTEXT_FULL
            return True
        if cancel is not None and cancel.is_set():
            outcome.finish_reason = CANCELLED
            return True
        return False

    token = sample(logits, sampling, rng, np.asarray(history, dtype=np.int64))  # pick the next token
    while True:
        if token in stop:  # end of sequence
            outcome.finish_reason = STOP
            return
        yield token
        produced += 1
        history.append(token)
        if ended():
            return
        # the cache holds every token but `token` (a longrope cache may have dropped more: Decoder._keepable), so
        # a run feeds what it lacks; a draft fits when it stays within what may still be produced and the context
        k = min(speculation.length.next(), steps - produced, decoder.context_length - len(history)) \
            if speculation is not None else 0
        draft = speculation.drafter.propose(history, k, sampling, rng) if k > 0 else None
        held = len(decoder.tokens)
        fed = history[held:]
        if not draft or not draft.tokens:  # decode: one token through the cache
            token = sample(_forward(decoder, fed), sampling, rng, np.asarray(history, dtype=np.int64))
            continue
        rows = _forward(decoder, fed + draft.tokens, last_only=False)  # one run checks the whole draft
        kept, token = verify(rows[len(fed) - 1:], draft, sampling, rng, history)
        decoder.truncate(held + len(fed) + len(kept))  # roll back past the rejected tokens (shared buffers: a mask)
        speculation.length.update(len(draft.tokens), len(kept))
        stats = speculation.stats
        stats.runs, stats.proposed, stats.accepted = stats.runs + 1, stats.proposed + len(draft.tokens), \
            stats.accepted + len(kept)
        for d in kept:
            if d in stop:
                outcome.finish_reason = STOP
                return
            yield d
            produced += 1
            history.append(d)
            if ended():
                return


def _prefill(decoder, prompt: list[int], cancel: Cancel | None, reuse: bool, outcome: Outcome):
    """Logits after the prompt, or None when cancelled. The cache keeps what it shares with the prompt when
    `reuse` (at least one token is run: its logits are needed)."""
    keep = min(shared_prefix(decoder.tokens, prompt), len(prompt) - 1) if reuse else 0
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


def _forward(decoder, ids: list[int], last_only: bool = True) -> np.ndarray:
    """decoder.forward; after a failure the cache is emptied (a run may have stopped half-way)."""
    try:
        return decoder.forward(ids, last_only=last_only)
    except BaseException:
        decoder.truncate(0)
        raise

