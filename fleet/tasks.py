"""What runs on a fleet worker: export a package, evaluate it, benchmark it. Plain functions over picklable
dataclasses; Dask ships them to workers that have edgelm installed.

    export_task(source, variant) ──> PackageRef ──> eval_task (perplexity on the row's provider)
                                              └──────────────> bench_task (holds the worker's machine slot)
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from edgelm.errors import ExportError
from edgelm.fleet.plan import BenchSettings, EvalSettings, Row, Source, Variant
from edgelm.fleet.store import PackageRef, complete, describe, materialize


def cache_folder() -> Path:
    """Where packages that travelled through Dask are kept on this worker."""
    base = os.environ.get("EDGELM_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                      Path.home() / ".cache") / "edgelm"
    return Path(base) / "fleet"


def export_task(source: Source, variant: Variant, store: str, key: str, transfer_mib: float) -> PackageRef:
    """The package for (source, variant) in `store/key`: reused when a complete one is there, else exported in a
    child process (staged beside the folder and renamed into place: a worker lost mid-export leaves nothing that
    counts). A child, not a thread: exports seed torch's global generator and import transformers lazily, neither
    safe beside another export in one process, and the child gives its memory back when it ends."""
    folder = Path(store) / key
    if complete(folder):
        return describe(key, folder, transfer_mib, reused=True)
    job = pickle.dumps((source, variant, str(folder)))
    done = subprocess.run([sys.executable, "-c", "from edgelm.fleet.tasks import export_child; export_child()"],
                          input=job, capture_output=True)
    if done.returncode != 0:
        try:
            raise pickle.loads(done.stdout)
        except (pickle.UnpicklingError, EOFError, TypeError):
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ExportError(f"the export of {source.name}/{variant.name} died (exit code {done.returncode}): "
                              f"{tail[0]}") from None
    return describe(key, folder, transfer_mib, reused=False)


def export_child() -> None:
    """The export child: (source, variant, folder) pickled on stdin; a raised error pickled on stdout."""
    source, variant, folder = pickle.loads(sys.stdin.buffer.read())
    from edgelm.export.pipeline import export_model, export_synthetic

    config = replace(variant.export_config(), force=True)  # an incomplete folder left there is replaced
    try:
        if source.synthetic:
            export_synthetic(source.synthetic, folder, config, seed=source.seed)
        else:
            export_model(source.model, folder, config)
    except Exception as exc:  # noqa: BLE001 - handed to the parent whole, typed
        try:
            sys.stdout.buffer.write(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle goes as its text
            sys.stdout.buffer.write(pickle.dumps(ExportError(f"{type(exc).__name__}: {exc}")))
        sys.stdout.flush()
        sys.exit(1)


def eval_task(ref: PackageRef, row: Row, settings: EvalSettings) -> dict:
    """Perplexity of the package on the shipped corpus, run through the row's provider."""
    if not settings.perplexity:
        return {"perplexity": None}
    from edgelm.bench.quality import evaluate

    package = materialize(ref, cache_folder())
    quality = evaluate(package, window=settings.window, ep=row.target.provider)
    return {"perplexity": quality.perplexity, "device": _device()}


def bench_task(ref: PackageRef, row: Row, settings: BenchSettings, quality: dict) -> dict:
    """One bench row (edgelm's schema) for the package on this worker, with where and when it ran."""
    from edgelm.bench.config import BenchConfig
    from edgelm.bench.runner import run_bench

    package = materialize(ref, cache_folder())
    config = BenchConfig(prompt_tokens=(settings.prompt,), gen_tokens=(settings.tokens,),
                         threads=(row.target.threads or settings.threads,), eps=(row.target.provider,),
                         repetitions=settings.repetitions, warmup=settings.warmup)
    started = time.time()
    result = run_bench([package], config)  # its own roofline: the machine's read bandwidth now, not at the first row
    finished = time.time()
    bench = result.rows[0]
    fleet = {"row": row.id, "label": row.label, "source": row.source.name, "variant": row.variant.name,
             "target": row.target.name, "package_key": ref.key, "package_reused": ref.reused,
             "started": started, "finished": finished, "notes": result.notes}
    provenance = {**bench.provenance, "device": _device(), "worker": _worker_address(), "host": socket.gethostname(),
                  "fleet": fleet}
    return replace(bench, perplexity=quality.get("perplexity"), provenance=provenance).to_dict()


def _device() -> str:
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return socket.gethostname()
    return socket.gethostname() if isinstance(name, int) else str(name)  # LocalCluster numbers its workers


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return ""
