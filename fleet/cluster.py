"""The Dask side: what a worker advertises, the embedded local cluster, a remote scheduler, `edgelm worker`.

Every worker advertises Dask resources:
    machine = 1       the whole device: a bench task takes all of it (no two timed tasks share a machine, and
                      nothing else runs beside one); an export or eval takes half (two at once, never beside a bench)
    memory = GiB      physical memory; an export asks for the plan's export_memory_gib
    <provider> = 1    each execution provider onnxruntime offers there (cpu, qnn, dml, webgpu, ...)
    any --resource NAME=N given to `edgelm worker` (a device class: phone = 1, snapdragon-x = 1)
"""

from __future__ import annotations

import logging
import os

from edgelm.errors import PlanError

MACHINE = "machine"  # the resource a bench task takes whole
MEMORY = "memory"
EXPORT_SHARE = 0.5  # of MACHINE: two exports or evals at once on a worker, none beside a bench
CAPABILITY = 0.001  # what a task asks of a provider resource: it must be there, but any number may use it


def require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise PlanError("the fleet runs on Dask distributed: pip install 'edgelm[fleet]'") from None


def memory_gib() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / (1 << 30)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)


def worker_resources(extra: dict[str, float] | None = None) -> dict[str, float]:
    """What this machine offers the fleet (see the module docstring)."""
    from edgelm.runtime.providers import available_providers

    resources = {MACHINE: 1.0, MEMORY: round(memory_gib(), 1)}
    resources.update({name: 1.0 for name in available_providers()})
    resources.update(extra or {})
    return resources


def parse_resources(items: list[str]) -> dict[str, float]:
    """NAME=N pairs from the command line."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise PlanError(f"--resource {item!r}: write NAME=NUMBER, e.g. --resource phone=1") from None
        if not name.strip() or out[name.strip()] <= 0:
            raise PlanError(f"--resource {item!r}: a name and a positive number, e.g. --resource phone=1")
    return out


def local_cluster(threads: int = 2):
    """The embedded default: one worker process for this machine (benchmarks on one machine must not overlap,
    so more workers would only contend), `threads` task threads for exports and evals side by side."""
    require_dask()
    from distributed import LocalCluster

    return LocalCluster(n_workers=1, threads_per_worker=threads, processes=True, resources=worker_resources(),
                        dashboard_address=":0" if has_dashboard() else None, silence_logs=logging.ERROR)


def has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def run_worker(scheduler: str, name: str | None = None, threads: int = 2, extra: dict[str, float] | None = None,
               announce=print) -> None:
    """`edgelm worker`: join `scheduler` with this machine's resources, restarted by a nanny if it dies, until
    interrupted."""
    require_dask()
    import asyncio
    import socket

    from distributed import Nanny

    resources = worker_resources(extra)
    name = name or socket.gethostname()

    async def serve():
        async with Nanny(scheduler, nthreads=threads, resources=resources, name=name) as nanny:
            announce(f"edgelm worker {name} joined {scheduler} offering {resources}")
            await nanny.finished()

    asyncio.run(serve())
