"""Run one benchmark configuration over a package: warm-up, then timed repetitions."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgelm import __version__
from edgelm.bench.config import BenchConfig
from edgelm.bench.schema import BenchRow, Stat, percentile
from edgelm.bench.system import peak_rss_bytes, system_info, versions
from edgelm.errors import BenchError
from edgelm.runtime import load

MIB = 1 << 20


def run_bench(package: str | Path, config: BenchConfig = BenchConfig()) -> BenchRow:
    if config.prompt_tokens < 1 or config.gen_tokens < 1 or config.repetitions < 1:
        raise BenchError("-p, -n and -r must be at least 1")
    start = time.perf_counter()
    model = load(package, ep=config.ep, threads=config.threads)
    load_s = time.perf_counter() - start
    manifest = model.manifest
    if config.prompt_tokens + config.gen_tokens > manifest.context_length:
        raise BenchError(
            f"-p {config.prompt_tokens} + -n {config.gen_tokens} exceeds the context length {manifest.context_length}"
        )
    vocab = min(manifest.vocab_size, model.tokenizer.vocab_size)
    prompt = np.random.default_rng(config.seed).integers(0, vocab, size=config.prompt_tokens)

    for _ in range(config.warmup):
        _one_round(model.decoder, prompt, min(config.gen_tokens, 8))
    rounds = [_one_round(model.decoder, prompt, config.gen_tokens) for _ in range(config.repetitions)]

    prefill_s = [r[0] for r in rounds]
    step_s = [s for r in rounds for s in r[1]]
    decode_s = [sum(r[1]) for r in rounds]
    files = manifest.files
    return BenchRow(
        model=manifest.source.get("model", Path(package).name),
        quant=manifest.quantization.mode,
        ep=config.ep,
        threads=config.threads or 0,
        pp=config.prompt_tokens,
        tg=config.gen_tokens,
        repetitions=config.repetitions,
        load_s=load_s,
        ttft_ms=Stat.of([s * 1e3 for s in prefill_s]),
        prefill_tps=Stat.of([config.prompt_tokens / s for s in prefill_s]),
        decode_ms_per_token=Stat.of([s * 1e3 for s in step_s]),
        decode_ms_p90=percentile(step_s, 0.9) * 1e3,
        decode_tps=Stat.of([config.gen_tokens / s for s in decode_s]),
        peak_rss_mib=peak_rss_bytes() / MIB,
        package_mib=sum(f.bytes for f in files.values()) / MIB,
        package_sha256=files[manifest.model_file].sha256 if manifest.model_file in files else "",
        samples={"prefill_s": prefill_s, "decode_s": decode_s},
        provenance={
            "edgelm": __version__,
            **versions("onnxruntime", "numpy"),
            **system_info(),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _one_round(decoder, prompt: np.ndarray, gen_tokens: int) -> tuple[float, list[float]]:
    """Time one prefill (to the first token) and `gen_tokens` single-token decode steps."""
    decoder.reset()
    t0 = time.perf_counter()
    token = int(np.argmax(decoder.forward(prompt)))
    prefill = time.perf_counter() - t0
    steps = []
    for _ in range(gen_tokens):
        t0 = time.perf_counter()
        token = int(np.argmax(decoder.forward([token])))
        steps.append(time.perf_counter() - t0)
    return prefill, steps
