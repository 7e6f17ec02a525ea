"""One result schema for every printer: a BenchRow per (engine, package, configuration).

What is timed (wall clock, time.perf_counter, inside the engine's own process):
- load_s: everything from nothing to a ready model (manifest, session creation, tokenizer for edgelm).
- prefill / TTFT: one forward pass over `pp` prompt tokens plus the argmax that picks the first token.
- decode: `tg` single-token forward passes through the KV cache, each with its argmax.
Tokenization and detokenization are excluded; the prompt is `pp` random token ids (fixed seed), the same
for every engine. Memory is the engine process's own: peak_rss_mib is its VmHWM (high-water mark),
rss_sampled_mib the largest resident size seen after a round.
"""

from __future__ import annotations

import dataclasses
import json
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
    engine: str
    package: str  # the package this configuration ran (peers carry the one they stood beside)
    model: str
    quant: str
    ep: str
    threads: int  # intra-op threads used (without -t: one per physical core, onnxruntime's default)
    pp: int
    tg: int
    repetitions: int
    load_s: float | None  # None: the engine's tool does not report its load (llama-bench)
    ttft_ms: Stat
    prefill_tps: Stat
    decode_ms_per_token: Stat
    decode_ms_p90: float
    decode_tps: Stat
    peak_rss_mib: float
    rss_sampled_mib: float
    package_mib: float | None = None
    package_sha256: str = ""
    kv_cache_mib: float | None = None  # at pp + tg tokens
    weight_mib_per_token: float | None = None  # constant bytes one decode step reads
    bandwidth_gbs: float | None = None  # weight bytes per token / median decode time
    # this machine's memory read bandwidth at `threads` (system.read_bandwidth, once a run): the decode roofline
    roofline_gbs: float | None = None
    ep_node_share: float | None = None  # fraction of graph nodes the provider runs (the rest: CPU)
    perplexity: float | None = None
    agreement: float | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    export_check: dict[str, Any] = field(default_factory=dict)  # the package manifest's self-check block ({}: none)

    def key(self) -> tuple:
        """What identifies a configuration across runs (for `bench compare`)."""
        return (self.engine, self.model, self.quant, self.ep, self.threads, self.pp, self.tg)

    def job(self) -> tuple:
        """The configuration an engine ran in; edgelm and its peers share it."""
        return (self.package, self.ep, self.threads, self.pp, self.tg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        stats = {f.name for f in dataclasses.fields(cls) if f.type == "Stat"}
        return cls(**{k: Stat(**v) if k in stats else v for k, v in data.items()})

    # -- flat form (CSV): nested stats as `name.mean`, dicts as JSON text ------------------------
    def to_flat(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for name, value in self.to_dict().items():
            if isinstance(value, dict) and name in ("samples", "provenance", "export_check"):
                flat[name] = json.dumps(value, sort_keys=True)
            elif isinstance(value, dict):
                flat.update({f"{name}.{k}": v for k, v in value.items()})
            else:
                flat[name] = value
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, str]) -> BenchRow:
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        data: dict[str, Any] = {}
        for key, text in flat.items():
            name, _, sub = key.partition(".")
            if sub:
                data.setdefault(name, {})[sub] = float(text)
            else:
                data[name] = _parse(types[name], text)
        return cls.from_dict(data)


def _parse(type_name: str, text: str) -> Any:
    if type_name.startswith("dict"):
        return json.loads(text)
    if text == "":
        return None if "None" in type_name else ""
    if type_name.startswith("int"):
        return int(text)
    if type_name.startswith("float"):
        return float(text)
    return text
