"""The sweep coordinator: every configuration, every engine in its own worker process, rounds interleaved.

    for each (package, ep, threads, pp, tg):
        start one worker per engine ──> load ──> warm-up round each
        repeat r times: one round on each engine in turn      (drift hits all engines alike)
        finish ──> peak RSS ──> one BenchRow per engine
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgelm import __version__
from edgelm.bench.config import BenchConfig
from edgelm.bench.schema import BenchRow, Stat, percentile
from edgelm.bench.system import git_commit, physical_cores, system_info, versions
from edgelm.errors import BenchError, UsageError
from edgelm.runtime.session import check_threads
from edgelm.progress import Progress, as_progress

MIB = 1 << 20


@dataclass
class BenchResult:
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Worker:
    """One engine in a child process (`python -m edgelm.bench.worker`)."""

    def __init__(self, engine: str, target: str):
        self.engine, self.target = engine, target
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgelm.bench.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1,
        )

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise BenchError(f"{self.engine} worker died (exit code {self.proc.returncode}) on {msg['cmd']}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def jobs(packages: list[str], config: BenchConfig):
    return list(itertools.product(packages, config.eps, config.threads, config.prompt_tokens, config.gen_tokens))


def run_bench(
    packages: list[str | Path],
    config: BenchConfig = BenchConfig(),
    peers: dict[str, str | None] | None = None,
    progress: bool | Progress = False,
) -> BenchResult:
    """Benchmark every package (and each peer engine -> its target) over every configuration."""
    if min(config.prompt_tokens + config.gen_tokens) < 1 or config.repetitions < 1:
        raise BenchError("-p, -n and -r must be at least 1")
    for threads in config.threads:  # before the bandwidth probe starts them all (10**5 threads: memory runs out)
        try:
            check_threads(threads)
        except UsageError as exc:
            raise BenchError(f"-t: {exc}") from None
    result = BenchResult()
    todo = jobs([str(p) for p in packages], config)
    progress = as_progress(progress)
    roofline: dict[int, float] = {}  # threads -> GB/s, measured once a run
    for package, ep, threads, pp, tg in todo:
        count = threads or physical_cores()
        if count not in roofline:
            roofline[count] = _read_bandwidth(count, progress)
        # a peer without a target of its own (optimum) runs the package's graph
        engines = [("edgelm", package)] + [(e, t or package) for e, t in (peers or {}).items()]
        rows = _run_job(engines, ep, threads, pp, tg, config, result.notes, progress)
        result.rows += [replace(r, roofline_gbs=roofline[count]) for r in rows]
    return result


def _read_bandwidth(threads: int, progress: Progress) -> float:
    """The machine's memory read bandwidth with `threads` threads, in a worker process like the engines'."""
    with progress.stage(f"measure memory read bandwidth ({threads} threads, 1 GiB) in a worker process"):
        worker = Worker("bandwidth", "")
        try:
            reply = worker.ask(cmd="bandwidth", threads=threads)
        finally:
            worker.close()
    if "error" in reply:
        raise BenchError(f"measuring the memory bandwidth failed: {reply['error']}")
    return reply["gbs"]


def _run_job(engines, ep, threads, pp, tg, config: BenchConfig, notes: list[str], progress: Progress
             ) -> list[BenchRow]:
    workers, loaded = [], {}
    try:
        for engine, target in engines:
            with progress.stage(f"load {engine} ({target}) in a worker process"):
                worker = Worker(engine, target)
                workers.append(worker)
                reply = worker.ask(cmd="load", engine=engine, target=target, ep=ep, threads=threads,
                                   strict=config.strict, provider_options=dict(config.provider_options))
            if "error" in reply:
                if engine == "edgelm":
                    raise BenchError(f"cannot load {target}: {reply['error']}")
                verb = "skipped" if reply.get("skip") else "failed to load, skipped"
                notes.append(f"{engine} {verb}: {reply['error']}")
                continue
            loaded[worker] = reply
        base = loaded[workers[0]]["info"]
        if pp + tg > base.get("context_length", pp + tg):
            raise BenchError(f"-p {pp} + -n {tg} exceeds the context length {base['context_length']}")
        vocab = min(r["vocab"] for r in loaded.values())
        prompt = np.random.default_rng(config.seed).integers(0, vocab, size=pp).tolist()
        rounds: dict[Worker, list[dict]] = {w: [] for w in loaded}
        what = f"bench pp{pp} tg{tg} on {ep}, {threads or physical_cores()} threads: {config.warmup} warm-up + rounds"
        with progress.stage(what, total=config.warmup + config.repetitions, unit="round") as bar:
            for i in range(config.warmup + config.repetitions):
                for worker in loaded:  # interleaved: one round per engine, in turn
                    reply = worker.ask(cmd="round", prompt=prompt, tg=tg if i >= config.warmup else min(tg, 8))
                    if "error" in reply:
                        raise BenchError(f"{worker.engine} failed during a round: {reply['error']}")
                    if i >= config.warmup:
                        rounds[worker].append(reply)
                bar.update(1)
        rows = []
        for worker, load in loaded.items():
            peak = worker.ask(cmd="finish")["peak_rss"]
            info = load["info"]
            if worker.engine != "edgelm":  # peers are labelled by the package they stand beside
                info = _labelled(worker.engine, base, info)
            rows.append(_row(worker.engine, engines[0][1], info, ep, threads, pp, tg, load["load_s"],
                             rounds[worker], peak))
        return rows
    finally:
        for worker in workers:
            worker.close()


def _peer_quant(engine: str, package_quant: str) -> str:
    """What precision a peer runs: optimum runs the package's graph, torch runs fp32, genai its own."""
    return {"optimum": package_quant, "torch": "fp32"}.get(engine, "own")


def _labelled(engine: str, base: dict, info: dict) -> dict:
    """A peer's row facts: the package's model name, and its own precision where it says (a GGUF file's type)."""
    return {"model": base["model"], "quant": _peer_quant(engine, base["quant"]), **info}


def _row(engine, package, info, ep, threads, pp, tg, load_s, rounds, peak_rss) -> BenchRow:
    prefill = [r["prefill_s"] for r in rounds]
    steps = [s for r in rounds for s in r["steps_s"]]
    decode = [sum(r["steps_s"]) for r in rounds]
    kv = info.get("kv_bytes_per_token")
    weights = info.get("weight_bytes_per_token")
    if weights is None and info.get("weights_graph"):  # a peer's graph, counted here (not in its process)
        from edgelm.weights import per_token_bytes

        weights = per_token_bytes(info["weights_graph"])
    step_median = float(np.median(steps))
    return BenchRow(
        engine=engine,
        package=package,
        model=info.get("model", "?"),
        quant=info.get("quant", "?"),
        ep=info.get("ep", ep),
        threads=threads or physical_cores(),  # the count used: no -t means one per physical core
        pp=pp,
        tg=tg,
        repetitions=len(rounds),
        load_s=None if info.get("load_unmeasured") else load_s,  # llama-bench: our worker read only a header
        ttft_ms=Stat.of([s * 1e3 for s in prefill]),
        prefill_tps=Stat.of([pp / s for s in prefill]),
        decode_ms_per_token=Stat.of([s * 1e3 for s in steps]),
        decode_ms_p90=percentile(steps, 0.9) * 1e3,
        decode_tps=Stat.of([tg / s for s in decode]),
        peak_rss_mib=peak_rss / MIB,
        rss_sampled_mib=max(r["rss"] for r in rounds) / MIB,
        package_mib=info["package_bytes"] / MIB if info.get("package_bytes") else None,
        package_sha256=info.get("package_sha256", ""),
        kv_cache_mib=kv * (pp + tg) / MIB if kv else None,
        weight_mib_per_token=weights / MIB if weights else None,
        bandwidth_gbs=weights / step_median / 1e9 if weights else None,
        ep_node_share=info.get("ep_node_share"),
        samples={"prefill_s": prefill, "decode_s": decode},
        provenance=_provenance(),
        export_check=info.get("export_check") or {},
    )


def _provenance() -> dict:
    return {
        "edgelm": __version__,
        **versions("onnxruntime", "numpy", "onnxruntime-genai", "optimum-onnx", "torch"),
        **system_info(),
        "git_commit": git_commit(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
