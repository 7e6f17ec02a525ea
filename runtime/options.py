"""What one generation is asked to do, validated once for the Python API, the CLI and the server.

`Request` is built by `Model.request()` from explicit keyword arguments; every check raises GenerationError
naming the argument and what it must be (the server turns those into HTTP 400 bodies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgelm.errors import GenerationError
from edgelm.runtime.sampling import SamplingConfig

# the generation options of Model.chat/complete/request (those of SamplingConfig first)
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
OPTIONS = ("max_new_tokens", *SAMPLING_OPTIONS, "stop", "stop_token_ids", "ignore_eos", "speculate")
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation. `cached_tokens`: prompt tokens whose keys/values were kept from the
    generation before (a chat's earlier turns), so they were not run again."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Request:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingConfig
    stop: tuple[str, ...] = ()  # stop strings: the text ends before the first one (it is not returned)
    stop_ids: frozenset[int] = field(default_factory=frozenset)  # token ids that end the generation (not returned)
    split_reasoning: bool = False  # route text into reasoning and content (chat with a reasoning model)
    thinking: bool = False  # the prompt itself opened the reasoning (its template ends with the start marker)
    # speculative decoding: None, a drafter name ("prompt-lookup") or a draft Model (edgelm.runtime.speculative)
    speculate: object = None


def max_new_tokens(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GenerationError(f"max_new_tokens must be a positive integer, not {value!r}")
    return value


def stop_strings(value) -> tuple[str, ...]:
    """None, one string or a sequence of non-empty strings (at most MAX_STOP_STRINGS)."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise GenerationError(f"stop must be a string or a list of strings, not {type(value).__name__}")
    if len(items) > MAX_STOP_STRINGS:
        raise GenerationError(f"stop takes at most {MAX_STOP_STRINGS} strings, not {len(items)}")
    for s in items:
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
            raise GenerationError(f"each stop string must be a non-empty str of at most {MAX_STOP_CHARS} "
                                  f"characters, not {s!r}"[:300])
    return tuple(items)


def stop_token_ids(value, vocab: int) -> frozenset[int]:
    """None or a sequence of token ids of this package's vocabulary."""
    if value is None:
        return frozenset()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise GenerationError(f"stop_token_ids must be a list of integers, not {type(value).__name__}")
    for t in value:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
            raise GenerationError(f"stop_token_ids must be integers in [0, {vocab}), not {t!r}")
    return frozenset(value)


def prompt_ids(ids, vocab: int) -> list[int]:
    import numpy as np

    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise GenerationError(f"prompt ids must be a list of integers, not {type(ids).__name__}")
    if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < vocab for t in ids):
        raise GenerationError(f"prompt ids must be integers in [0, {vocab}) for this package")
    return [int(t) for t in ids]
