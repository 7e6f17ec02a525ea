"""Benchmark defaults, defined once: the CLI and the API read them from here.

Every list field is swept: a run covers each combination of packages x eps x threads x pp x tg.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    prompt_tokens: tuple[int, ...] = (128,)  # pp: prompt tokens prefilled in one pass
    gen_tokens: tuple[int, ...] = (128,)  # tg: tokens decoded one at a time
    threads: tuple[int | None, ...] = (None,)  # None: onnxruntime's default (one per physical core)
    eps: tuple[str, ...] = ("cpu",)
    repetitions: int = 5
    warmup: int = 1
    seed: int = 0
    strict: bool | None = None  # fail instead of letting nodes fall back to the CPU (None: per package)
    provider_options: tuple[tuple[str, str], ...] = ()
