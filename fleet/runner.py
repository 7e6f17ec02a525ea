"""Run a plan on a Dask cluster: rows already done are skipped, packages are exported once, every finished row is
appended to the results JSONL as it lands, and what failed is recorded with why.

    rows ──> skip those in results.jsonl ──> check some worker offers each row's resources
         ──> submit: export (per package key) ──> eval (per row) ──> bench (per row, the machine slot)
         ──> as each bench finishes: append its row (or its failure) ──> status file, summary
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgelm.bench.schema import BenchRow
from edgelm.fleet.cluster import CAPABILITY, EXPORT_SHARE, MACHINE, MEMORY, has_dashboard, local_cluster, require_dask
from edgelm.fleet.plan import Plan, Row
from edgelm.fleet.store import package_key, source_fingerprint
from edgelm.fleet.tasks import bench_task, eval_task, export_task


@dataclass
class PlanResult:
    rows: list[BenchRow] = field(default_factory=list)  # every row done, this run's and earlier runs'
    failed: dict[str, str] = field(default_factory=dict)  # row label -> why
    skipped: int = 0  # rows found done in the results file
    exports: int = 0  # package exports submitted this run (rows sharing a package share one)
    wall_s: float = 0.0
    dashboard: str | None = None


def read_done(path: Path) -> list[BenchRow]:
    """Fleet rows already in the results file (a line cut short by a crash is ignored)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = BenchRow.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue
            if row.provenance.get("fleet", {}).get("row"):
                rows.append(row)
    return rows


def done_rows(path: Path, keys: dict[str, str]) -> list[BenchRow]:
    """The results file's rows of this plan (`keys`: row id -> package key) that measured the package the row names
    now: a row whose source content or export options changed since is run again."""
    return [r for r in read_done(path) if keys.get(r.provenance["fleet"]["row"]) == r.provenance["fleet"].get(
        "package_key")]


def needs(row: Row, bench: bool) -> dict[str, float]:
    """The Dask resources a row's bench (whole machine) or eval (a share) takes. The provider is a capability,
    not a count: a sliver of it, so it places the task without limiting how many run (the machine does that)."""
    return {MACHINE: 1.0 if bench else EXPORT_SHARE, row.target.provider: CAPABILITY, **row.resources()}


def _offered(workers: dict, want: dict[str, float]) -> bool:
    return any(all(w.get("resources", {}).get(k, 0) >= v for k, v in want.items()) for w in workers.values())


def run_plan(plan: Plan, scheduler: str | None = None, client=None, progress: bool = True,
             announce=print) -> PlanResult:
    """Run every row of `plan` not already in its results file; return all rows and the failures."""
    require_dask()
    import dask
    from distributed import Client

    start = time.perf_counter()
    results = plan.path(plan.results)
    store = plan.path(plan.store).resolve()
    rows = plan.rows()
    cache = store / ".source-hashes.json"
    fingerprints = {s.name: source_fingerprint(s, cache) for s in {r.source for r in rows}}
    keys = {r.id: package_key(fingerprints[r.source.name], r.variant) for r in rows}
    done = done_rows(results, keys)
    done_ids = {r.provenance["fleet"]["row"] for r in done}
    todo = [r for r in rows if r.id not in done_ids]
    out = PlanResult(rows=done, skipped=len(rows) - len(todo))
    if not todo:
        announce(f"all {len(rows)} rows of {plan.name} are in {results}: nothing to run")
        out.wall_s = time.perf_counter() - start
        return out
    owned = None
    if client is None:
        with dask.config.set({"distributed.scheduler.allowed-failures": plan.allowed_failures}):
            if scheduler:
                client = Client(scheduler)
            else:
                owned = local_cluster()
                client = Client(owned)
    try:
        out.dashboard = client.dashboard_link if has_dashboard() else None
        if out.dashboard:
            announce(f"Dask dashboard: {out.dashboard}")
        _submit_and_collect(plan, todo, keys, store, results, client, out, progress)
    finally:
        if owned is not None:
            client.close()
            owned.close()
    _write_status(results, rows, out)
    out.wall_s = time.perf_counter() - start
    return out


def _submit_and_collect(plan, todo, keys, store, results, client, out: PlanResult, progress) -> None:
    from distributed import as_completed

    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]  # every worker (newer distributed lists a few)
    except TypeError:  # distributed before n_workers: lists them all
        workers = client.scheduler_info()["workers"]
    export_needs = {MACHINE: EXPORT_SHARE, MEMORY: plan.export_memory_gib}
    exports, benches = {}, {}
    for row in todo:
        missing = [want for want in (export_needs, needs(row, bench=True)) if not _offered(workers, want)]
        if missing:
            out.failed[row.label] = (f"no worker offers {missing[0]} (workers: "
                                     f"{ {w.get('name'): w.get('resources') for w in workers.values()} })")
            continue
        key = keys[row.id]
        if key not in exports:
            exports[key] = client.submit(export_task, row.source, row.variant, str(store), key, plan.transfer_mib,
                                         key=f"export-{row.source.name}-{row.variant.name}-{key}",
                                         resources=export_needs, pure=False)
        quality = client.submit(eval_task, exports[key], row, plan.eval, key=f"eval-{row.label}-{row.id}",
                                resources=needs(row, bench=False), pure=False)
        benches[client.submit(bench_task, exports[key], row, plan.bench, quality, key=f"bench-{row.label}-{row.id}",
                              resources=needs(row, bench=True), pure=False)] = row
    out.exports = len(exports)
    bar = _bar(len(benches), progress)
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as sink:
        for future in as_completed(list(benches)):
            row = benches[future]
            if future.status == "finished":
                data = future.result()
                sink.write(json.dumps(data) + "\n")
                sink.flush()
                out.rows.append(BenchRow.from_dict(data))
            else:
                out.failed[row.label] = _why(future.exception())
            if bar is not None:
                bar.set_postfix_str(f"{len(out.failed)} failed" if out.failed else row.label, refresh=False)
                bar.update(1)
    if bar is not None:
        bar.close()


def _why(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return f"the task lost its worker more than the allowed number of times ({exc})"
    return f"{name}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _bar(total: int, progress: bool):
    if not progress or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="fleet rows", unit="row")


def _write_status(results: Path, rows: list[Row], out: PlanResult) -> None:
    """results.status.json: every row of the plan, done (where) or failed (why)."""
    where = {r.provenance["fleet"]["row"]: r.provenance.get("device") for r in out.rows}
    status = {}
    for row in rows:
        if row.label in out.failed:
            status[row.label] = {"row": row.id, "status": "failed", "why": out.failed[row.label]}
        elif row.id in where:
            status[row.label] = {"row": row.id, "status": "done", "device": where[row.id]}
        else:
            status[row.label] = {"row": row.id, "status": "not run"}
    path = results.with_suffix(".status.json")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=1, sort_keys=True))
    os.replace(tmp, path)

