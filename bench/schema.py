"""One result schema for every printer: a BenchRow per (package, configuration).

What is timed (wall clock, time.perf_counter):
- load_s: Manifest read + InferenceSession creation + tokenizer load.
- prefill (TTFT): one forward pass over `pp` prompt tokens plus argmax of the last logits.
- decode: `tg` single-token forward passes through the KV cache, each with its argmax.
Tokenization and detokenization are excluded; the prompt is `pp` random token ids (fixed seed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import fmean, median, pstdev
from typing import Any


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    median: float

    @classmethod
    def of(cls, samples: list[float]) -> Stat:
        return cls(fmean(samples), pstdev(samples) if len(samples) > 1 else 0.0, median(samples))


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass(frozen=True)
class BenchRow:
    model: str
    quant: str
    ep: str
    threads: int
    pp: int
    tg: int
    repetitions: int
    load_s: float
    ttft_ms: Stat
    prefill_tps: Stat
    decode_ms_per_token: Stat
    decode_ms_p90: float
    decode_tps: Stat
    peak_rss_mib: float
    package_mib: float
    package_sha256: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
