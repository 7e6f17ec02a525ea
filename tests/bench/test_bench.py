"""The benchmark: every figure present and sane, repetitions recorded, printers consistent."""

import json

import pytest

from edgelm.bench import BenchConfig, run_bench
from edgelm.bench.report import COLUMNS, markdown
from edgelm.errors import BenchError
from tests.conftest import run_cli


def test_run_bench_fields(builds):
    package = builds.package("tiny-llama", "int4")
    row = run_bench(package, BenchConfig(prompt_tokens=16, gen_tokens=8, repetitions=3, threads=1))
    assert (row.pp, row.tg, row.repetitions, row.threads, row.quant) == (16, 8, 3, 1, "int4")
    assert len(row.samples["prefill_s"]) == 3 and len(row.samples["decode_s"]) == 3
    assert row.load_s > 0 and row.ttft_ms.mean > 0 and row.prefill_tps.mean > 0
    assert row.decode_ms_per_token.median > 0 and row.decode_ms_p90 >= row.decode_ms_per_token.median
    assert row.decode_tps.mean == pytest.approx(sum(8 / s for s in row.samples["decode_s"]) / 3)
    assert 0 < row.peak_rss_mib < 4096 and row.package_mib > 0 and len(row.package_sha256) == 64
    assert {"edgelm", "onnxruntime", "cpu", "os", "timestamp"} <= set(row.provenance)
    table = markdown([row]).splitlines()
    assert len(table) == 3 and table[0].count("|") == len(COLUMNS) + 1


def test_bench_refuses_a_run_past_the_context(builds):
    with pytest.raises(BenchError, match="context length"):
        run_bench(builds.package("tiny-llama", "int4"), BenchConfig(prompt_tokens=500, gen_tokens=100))


def test_cli_bench_markdown_and_json(builds, tmp_path):
    out = tmp_path / "rows.json"
    package = builds.package("tiny-qwen2", "int4")
    proc = run_cli("bench", package, "-p", "8", "-n", "4", "-r", "2", "-t", "1", "--json", out, check=True)
    assert "| pp8+tg4 |" in proc.stdout.replace(" pp8", "| pp8").replace("|| ", "| ") or "pp8+tg4" in proc.stdout
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["pp"] == 8 and rows[0]["tg"] == 4 and rows[0]["repetitions"] == 2
    assert len(rows[0]["samples"]["decode_s"]) == 2
