"""The benchmark harness: sweeps, figures, printers that parse back, peers, compare, quality, plots."""

import dataclasses
import json
import random

import numpy as np
import pytest

from edgelm.bench import BenchConfig, run_bench
from edgelm.bench.compare import compare
from edgelm.bench.plots import write_plots
from edgelm.bench.quality import TorchReference, agreement, evaluate, perplexity
from edgelm.bench.report import COLUMNS, from_csv, from_json, from_jsonl, from_markdown, render
from edgelm.errors import BenchError
from edgelm.runtime import load
from tests.conftest import run_cli

SMALL = dict(gen_tokens=(6,), repetitions=3, warmup=1)


@pytest.fixture(scope="module")
def sweep(builds):
    """2 packages x 2 prompt lengths = 4 rows."""
    packages = [builds.package("tiny-llama", "int4"), builds.package("tiny-qwen2", "int8")]
    return run_bench(packages, BenchConfig(prompt_tokens=(8, 16), threads=(1,), **SMALL))


def test_sweep_yields_a_row_per_configuration_with_every_field(sweep):
    rows = sweep.rows
    assert len(rows) == 4 and not sweep.notes
    assert sorted((r.quant, r.pp) for r in rows) == [("int4", 8), ("int4", 16), ("int8", 8), ("int8", 16)]
    for r in rows:
        assert r.engine == "edgelm" and r.threads == 1 and r.tg == 6 and r.repetitions == 3
        assert len(r.samples["prefill_s"]) == 3 and len(r.samples["decode_s"]) == 3
        assert r.load_s > 0 and r.ttft_ms.mean > 0 and r.prefill_tps.mean > 0
        assert r.decode_ms_p90 >= r.decode_ms_per_token.median > 0
        assert r.decode_tps.mean == pytest.approx(np.mean([6 / s for s in r.samples["decode_s"]]))
        assert 0 < r.peak_rss_mib < 4096 and r.rss_sampled_mib <= r.peak_rss_mib + 1
        assert r.package_mib > 0 and len(r.package_sha256) == 64
        # 2 layers x (k + v) x 2 kv heads x 16 dims x 4 bytes x (pp + tg) tokens
        assert r.kv_cache_mib == pytest.approx(2 * 2 * 2 * 16 * 4 * (r.pp + r.tg) / (1 << 20))
        assert r.weight_mib_per_token > 0 and r.bandwidth_gbs > 0
        # the machine's read bandwidth, measured once for the run (1 thread here): one figure for every row
        assert r.roofline_gbs == rows[0].roofline_gbs > 0.5
        assert {"edgelm", "onnxruntime", "cpu", "os", "timestamp", "git_commit"} <= set(r.provenance)


@pytest.mark.parametrize("fmt,reader", [("json", from_json), ("jsonl", from_jsonl), ("csv", from_csv)])
def test_machine_formats_parse_back_to_the_same_rows(sweep, fmt, reader):
    assert reader(render(sweep.rows, fmt)) == sweep.rows


def test_markdown_parses_back_to_the_displayed_figures(sweep):
    cells = from_markdown(render(sweep.rows, "md"))
    assert len(cells) == len(sweep.rows)
    for row, got in zip(sweep.rows, cells):
        assert got == {name: cell(row) for name, cell in COLUMNS}
        assert float(got["decode tok/s"].split(" ± ")[0]) == pytest.approx(row.decode_tps.mean, abs=0.05)


# Decode and prefill times of 5 repetitions with about 2% spread: what a quiet run looks like.
DECODE = [0.100, 0.102, 0.098, 0.101, 0.099]
PREFILL = [0.0200, 0.0204, 0.0196, 0.0202, 0.0198]


def _timed(row, factor=1.0, seed=0, jitter=0.0):
    """`row` with controlled samples: decode times scaled by `factor`, each shaken by +-`jitter`."""
    rng = random.Random(seed)
    decode = [s * factor * (1 + rng.uniform(-jitter, jitter)) for s in DECODE]
    return dataclasses.replace(row, samples={"prefill_s": list(PREFILL), "decode_s": decode})


def test_compare_flags_a_30_percent_slowdown_and_ignores_noise(sweep):
    old = [_timed(r) for r in sweep.rows]
    slow = [_timed(r, 1.30, i) if i == 0 else r for i, r in enumerate(old)]
    changes, unmatched = compare(old, slow)
    assert not unmatched
    assert len(changes) == 1 and changes[0].figure == "decode tok/s" and not changes[0].better
    assert changes[0].relative == pytest.approx(1 / 1.3 - 1, abs=0.01)
    noisy = [_timed(r, 1.0, i, jitter=0.01) for i, r in enumerate(old)]  # within the measured spread
    assert compare(old, noisy)[0] == []
    faster = [_timed(r, 0.7) for r in old]
    assert all(c.better for c in compare(old, faster)[0])


def test_cli_compare_exit_code(sweep, tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text(render([_timed(r) for r in sweep.rows], "jsonl"))
    new.write_text(render([_timed(r, 1.3, i) for i, r in enumerate(sweep.rows)], "jsonl"))
    proc = run_cli("bench", "compare", old, new)
    assert proc.returncode == 1 and proc.stdout.count("REGRESSED") == 4
    same = run_cli("bench", "compare", old, old)
    assert same.returncode == 0 and "no change beyond the measured noise" in same.stdout


def test_peers_run_beside_edgelm_interleaved(builds):
    package = builds.package("tiny-llama", "int4")  # native
    optimum_made = builds.package("tiny-llama", "int4", "optimum")
    result = run_bench([package], BenchConfig(prompt_tokens=(8,), threads=(1,), **SMALL),
                       peers={"optimum": str(optimum_made), "torch": str(builds.hf("tiny-llama"))})
    engines = {r.engine: r for r in result.rows}
    assert not result.notes and set(engines) == {"edgelm", "optimum", "torch"}
    assert engines["optimum"].quant == "int4" and engines["torch"].quant == "fp32"
    assert all(r.repetitions == 3 and r.decode_tps.mean > 0 for r in result.rows)


def test_cli_bench_notes_missing_peers_and_writes_plots(builds, tmp_path):
    package = builds.package("tiny-qwen2", "int4")
    proc = run_cli("bench", package, "-p", "8,16", "-n", "4", "-r", "2", "-t", "1", "--vs", "genai,torch",
                   "-o", "csv", "--json", tmp_path / "rows.json", "--plot", tmp_path / "plots", "-q", check=True)
    assert "torch skipped: give --hf DIR" in proc.stdout and "genai skipped" in proc.stdout
    assert len(json.loads((tmp_path / "rows.json").read_text())) == 2
    for name in ("speed_vs_prompt.png", "memory.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_bench_refuses_a_run_past_the_context(builds):
    with pytest.raises(BenchError, match="context length"):
        run_bench([builds.package("tiny-llama", "int4")], BenchConfig(prompt_tokens=(500,), gen_tokens=(100,)))


def test_perplexity_matches_torch(builds):
    """Our perplexity on the shipped corpus equals the one PyTorch gives on the same windows."""
    model = load(builds.package("tiny-llama", "fp32"))
    ref = TorchReference(builds.hf("tiny-llama"))
    ids = model.tokenizer.encode("The capital of France is Paris, a city on the river Seine.")
    logits = ref.logits(ids)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    want = float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))
    got = perplexity(model, "The capital of France is Paris, a city on the river Seine.")
    assert got == pytest.approx(want, rel=1e-4)


def test_eval_quality_against_reference(builds):
    fp32, int8 = builds.package("tiny-llama", "fp32"), builds.package("tiny-llama", "int8")
    same = evaluate(fp32, ref=fp32, divergence=True)
    assert same.agreement == 1.0 and same.perplexity > 1
    assert same.kl == pytest.approx(0.0, abs=1e-5) and same.text_top1 == 1.0
    assert evaluate(fp32, ref=fp32).kl is None  # the bench's --eval asks for perplexity and agreement only
    q = evaluate(int8, ref=builds.hf("tiny-llama"), divergence=True)  # the HF folder: a PyTorch reference
    assert q.agreement >= 0.85  # measured 1.00 for this seed (test_parity.py)
    assert q.perplexity == pytest.approx(same.perplexity, rel=0.2)
    assert 0 < q.kl < 0.5 and q.text_top1 > 0.8
    int4 = evaluate(builds.package("tiny-llama", "int4"), ref=fp32, divergence=True)
    assert int4.kl > q.kl  # 16 levels per block move further than 256
    proc = run_cli("eval", int8, "--ref", fp32, check=True)
    assert "perplexity" in proc.stdout and "agreement" in proc.stdout and "KL divergence" in proc.stdout


def test_eval_reads_a_text_file(builds, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The river Seine flows through Paris. " * 20, encoding="utf-8")
    fp32 = builds.package("tiny-llama", "fp32")
    proc = run_cli("eval", fp32, "--text", text, "--window", "64", check=True)
    assert f"({text}, windows of 64 tokens)" in proc.stdout
    proc = run_cli("eval", fp32, "--text", tmp_path / "missing.txt")
    assert proc.returncode == 2 and "cannot read --text" in proc.stderr


def test_agreement_detects_a_different_model(builds):
    model = load(builds.package("tiny-llama", "fp32"))
    other = TorchReference(builds.hf("tiny-mistral"))
    assert agreement(model, other) < 0.5


def test_rows_without_a_thread_count_say_how_many_threads_ran(builds):
    """No -t: onnxruntime uses one thread per physical core, and the row (markdown and JSON alike) says that
    number, not 0 or "auto"."""
    from edgelm.bench.report import render
    from edgelm.bench.system import physical_cores

    result = run_bench([builds.package("tiny-llama", "int4")], BenchConfig(prompt_tokens=(8,), threads=(None,), **SMALL))
    (row,) = result.rows
    assert row.threads == physical_cores() >= 1
    assert "auto" not in render(result.rows, "md") and '"threads": 0' not in render(result.rows, "json")


def test_bench_spec_reports_every_mode_with_the_plain_answers(builds, tmp_path):
    """`edgelm bench spec`: both prompt sets x plain / prompt lookup / a draft package, speculative answers equal
    to the plain ones (greedy), the verification cost and the draft's break-even."""
    out = tmp_path / "spec.json"
    proc = run_cli("bench", "spec", builds.package("tiny-llama", "fp32"), "--draft", builds.package("tiny-llama", "int8"),
                   "-n", "8", "-r", "1", "-t", "1", "--json", out, "-q", check=True)
    rows = json.loads(out.read_text())
    modes = [r for r in rows if "mode" in r]
    assert {(r["prompt_set"], r["mode"]) for r in modes} == \
        {(s, m) for s in ("grounded", "open") for m in ("plain", "prompt-lookup", "draft-model")}
    assert all(r["mismatches"] == 0 and r["decode_tps_median"] > 0 for r in modes)
    assert all(0 <= r["acceptance"] <= 1 for r in modes if r["mode"] != "plain")
    cost = next(r["verify_cost_ms"] for r in rows if "verify_cost_ms" in r)
    assert set(cost) == {"0", "1", "2", "4", "8"} and all(v > 0 for v in cost.values())
    assert "decode steps" in proc.stdout and "needs" in proc.stdout
