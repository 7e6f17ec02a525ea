"""Benchmark defaults, defined once: the CLI and the API read them from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    prompt_tokens: int = 128  # pp: prompt tokens prefilled in one pass
    gen_tokens: int = 128  # tg: tokens decoded one at a time
    threads: int | None = None  # None: onnxruntime's default (one per physical core)
    repetitions: int = 5
    warmup: int = 1
    ep: str = "cpu"
    seed: int = 0
