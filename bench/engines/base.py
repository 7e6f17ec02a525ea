"""The Engine interface and its registry."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from edgelm.errors import BenchError

ENGINES: dict[str, type[Engine]] = {}


class EngineUnavailable(BenchError):
    """A peer engine is not installed or has nothing to run; the sweep skips it with this note."""


def register(name: str) -> Callable[[type[Engine]], type[Engine]]:
    def wrap(cls: type[Engine]) -> type[Engine]:
        cls.name = name
        ENGINES[name] = cls
        return cls

    return wrap


def get_engine(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise BenchError(f"unknown engine {name!r}; choose from: {', '.join(ENGINES)}")
    return ENGINES[name]


class Engine:
    """Load a model, then time-able calls: reset, prefill(ids) -> first token, step(token) -> next token.

    Greedy (argmax) picks the next token in every engine, so sampling cost is the same everywhere.
    """

    name: ClassVar[str] = ""

    def __init__(self, target: str, ep: str, threads: int | None, strict: bool | None = None,
                 provider_options: dict[str, str] | None = None):
        self.target, self.ep, self.threads = target, ep, threads
        self.strict, self.provider_options = strict, provider_options or {}

    def info(self) -> dict[str, Any]:
        """Static facts for the row: quant, package bytes and sha256, KV bytes per token, weights per token."""
        return {}

    def vocab_size(self) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def prefill(self, ids: np.ndarray) -> int:
        return self._run(ids)

    def step(self, token: int) -> int:
        return self._run([token])

    def _run(self, ids) -> int:
        """Feed `ids` after the cached ones; the argmax of the last position's logits."""
        raise NotImplementedError
