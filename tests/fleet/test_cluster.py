"""The fleet on a real Dask cluster: a scheduler and three worker processes (each under a nanny) on loopback, with
different advertised resources. 2 synthetic models x 3 formats x 2 devices = 12 rows from 6 exports."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict

import pytest

distributed = pytest.importorskip("distributed")

from edgelm.fleet import run_plan  # noqa: E402
from edgelm.fleet.plan import parse_plan  # noqa: E402

pytestmark = pytest.mark.slow

CPU = {"machine": 1.0, "memory": 8.0, "cpu": 1.0}
WORKERS = {"laptop-a": CPU, "laptop-b": CPU, "phone-c": {**CPU, "phone": 1.0}}


def plan_for(tmp_path, **extra):
    return parse_plan({
        "name": "two-devices",
        "store": str(tmp_path / "store"),
        "results": str(tmp_path / "results.jsonl"),
        "source": [{"name": "llama", "synthetic": "tiny-llama"}, {"name": "qwen", "synthetic": "tiny-qwen2"}],
        "variant": [{"name": "fp32", "quant": "fp32", "check": False},
                    {"name": "int8", "quant": "int8", "check": False},
                    {"name": "int4", "quant": "int4", "check": False}],
        "target": [{"name": "laptop"}, {"name": "phone", "needs": {"phone": 1}}],
        "bench": {"prompt": 16, "tokens": 8, "repetitions": 1, "threads": 1},
        "eval": {"window": 32},
        **extra,
    }, folder=tmp_path)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, Nanny, Scheduler, SpecCluster

    workers = {name: {"cls": Nanny, "options": {"nthreads": 2, "resources": res, "name": name}}
               for name, res in WORKERS.items()}
    cluster = SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                          silence_logs=40)
    with Client(cluster) as c:
        c.wait_for_workers(len(WORKERS))
        yield c
    cluster.close()


def _kill_a_worker_mid_bench(client, killed: list):
    """SIGKILL the process of the first worker seen running a bench task (its nanny starts a new one)."""
    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        for address, keys in client.processing().items():
            if any(str(k).startswith("bench-") for k in keys):
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                killed.append(address)
                return
        time.sleep(0.2)


def test_a_plan_runs_where_its_resources_are_survives_a_lost_worker_and_resumes(client, tmp_path):
    plan = plan_for(tmp_path)
    killed: list = []
    killer = threading.Thread(target=_kill_a_worker_mid_bench, args=(client, killed), daemon=True)
    killer.start()
    result = run_plan(plan, client=client, progress=False, announce=lambda *_: None)
    killer.join(timeout=1)
    assert killed, "no bench task was seen running: the fault was never injected"
    assert result.failed == {} and len(result.rows) == 12 and result.exports == 6
    labels = sorted(r.provenance["fleet"]["label"] for r in result.rows)
    assert labels == sorted(r.label for r in plan.rows())  # every row, once, despite the lost worker

    # placement: rows needing `phone` ran only on the worker that offers it; the others anywhere
    for r in result.rows:
        if r.provenance["fleet"]["target"] == "phone":
            assert r.provenance["device"] == "phone-c"
    # rows sharing a package used one export (content-addressed): 6 packages in the store for 12 rows
    assert len({r.provenance["fleet"]["package_key"] for r in result.rows}) == 6
    assert len([p for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")]) == 6

    assert_no_bench_overlaps(result.rows)

    # the rows are real bench rows with an eval: measured speed and a perplexity through the row's provider
    for r in result.rows:
        assert r.decode_tps.median > 0 and r.perplexity is not None and r.perplexity > 1
    status = json.loads((tmp_path / "results.status.json").read_text())
    assert {v["status"] for v in status.values()} == {"done"} and len(status) == 12

    # one merged table through the bench printers (device and row columns), and the speed/quality figure
    from edgelm.bench.plots import speed_vs_quality
    from edgelm.bench.report import from_markdown, render

    cells = from_markdown(render(result.rows, "md"))
    assert [c["device"] for c in cells] == [r.provenance["device"] for r in result.rows] and "phone-c" in str(cells)
    assert sorted(c["row"] for c in cells) == labels
    assert speed_vs_quality(result.rows, tmp_path / "fleet.png").stat().st_size > 10_000

    # resume: a second run finds every row done and runs nothing
    again = run_plan(plan, client=client, progress=False, announce=lambda *_: None)
    assert again.skipped == 12 and again.exports == 0 and len(again.rows) == 12


def assert_no_bench_overlaps(rows):
    """No two bench tasks overlapped in time on one worker (each holds the whole `machine` resource)."""
    spans = defaultdict(list)
    for r in rows:
        f = r.provenance["fleet"]
        spans[r.provenance["worker"]].append((f["started"], f["finished"]))
    for worker, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:]):
            assert start >= end, f"two bench tasks overlapped on {worker}"


def test_benches_ready_together_on_one_worker_run_one_at_a_time(client, tmp_path):
    """Four rows of one package, all on the one `phone` worker (two task threads; `phone` asked as a capability,
    0.001, so it places without serializing): benches become ready while others run there; the machine resource
    makes them take turns (planted: a bench asking for half the machine, as an eval does, overlaps here)."""
    plan = plan_for(tmp_path, source=[{"name": "llama", "synthetic": "tiny-llama"}],
                    variant=[{"name": "int4", "quant": "int4", "check": False}],
                    target=[{"name": f"phone-{t}", "needs": {"phone": 0.001}, "threads": t} for t in (1, 2, 3, 4)],
                    bench={"prompt": 16, "tokens": 256, "repetitions": 3})
    result = run_plan(plan, client=client, progress=False, announce=lambda *_: None)
    assert result.failed == {} and len(result.rows) == 4 and result.exports == 1
    assert {r.provenance["device"] for r in result.rows} == {"phone-c"}
    assert sorted(r.threads for r in result.rows) == [1, 2, 3, 4]  # each target's thread count reached its bench
    assert_no_bench_overlaps(result.rows)


def test_a_row_no_worker_can_run_fails_by_name_and_the_rest_complete(client, tmp_path):
    plan = plan_for(tmp_path, source=[{"name": "llama", "synthetic": "tiny-llama"}],
                    variant=[{"name": "fp32", "quant": "fp32", "check": False}],
                    target=[{"name": "laptop"}, {"name": "gpu", "provider": "dml"}])
    result = run_plan(plan, client=client, progress=False, announce=lambda *_: None)
    assert [r.provenance["fleet"]["label"] for r in result.rows] == ["llama/fp32@laptop"]
    assert list(result.failed) == ["llama/fp32@gpu"] and "no worker offers" in result.failed["llama/fp32@gpu"]
    assert "'dml': 0.001" in result.failed["llama/fp32@gpu"]
