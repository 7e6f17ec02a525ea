"""KL divergence scored as llama-perplexity --kl-divergence scores it (bench/kld.py), against hand computation;
`edgelm eval --kld` on real packages; the llama.cpp peer skipped with its reason when no llama-bench is named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgelm.bench.kld import Scores, chunks
from edgelm.errors import BenchError
from tests.conftest import run_cli


def test_chunks_are_full_windows_with_bos_first():
    ids = list(range(10, 30))  # 20 tokens
    assert chunks(ids, 8) == [list(range(10, 18)), list(range(18, 26))]  # the 4-token tail is dropped
    assert [c[0] for c in chunks(ids, 8, bos=1)] == [1, 1]
    with pytest.raises(BenchError, match="fewer than one chunk"):
        chunks(ids[:5], 8)


def test_scores_equal_a_hand_computed_case():
    """n_ctx 6: llama-perplexity scores logits at positions 3 and 4 (first = n_ctx/2 up to n_ctx - 2), which
    predict tokens 4 and 5. Vocabulary of 3; every figure below is computed by hand from softmaxes."""
    chunk = [0, 1, 2, 0, 2, 1]
    ref = np.zeros((6, 3), np.float32)
    cand = np.zeros((6, 3), np.float32)
    ref[3], cand[3] = [math.log(0.5), math.log(0.25), math.log(0.25)], [math.log(0.25), math.log(0.5), math.log(0.25)]
    ref[4], cand[4] = [math.log(0.2), math.log(0.6), math.log(0.2)], [math.log(0.2), math.log(0.6), math.log(0.2)]
    ref[0:3] = cand[0:3] = 5.0 * np.eye(3)  # not scored: must not matter
    cand[5] = [9.0, -9.0, 0.0]  # the last position predicts nothing: not scored
    s = Scores()
    s.add(ref, cand, chunk)
    r = s.result(1, 6)
    kl_3 = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1.0)  # = 0.25 ln 2
    assert r.positions == 2
    assert r.kld == pytest.approx((kl_3 + 0.0) / 2, abs=1e-7)  # float32 logits
    assert r.same_top == pytest.approx(0.5)  # position 3: argmax 0 vs 1; position 4: both 1
    # PPL over the scored tokens: chunk[4] = 2 under cand[3] (p 0.25), chunk[5] = 1 under cand[4] (p 0.6)
    assert r.ppl == pytest.approx(math.exp(-(math.log(0.25) + math.log(0.6)) / 2), rel=1e-6)  # float32 logits
    assert r.ppl_ref == pytest.approx(math.exp(-(math.log(0.25) + math.log(0.6)) / 2), rel=1e-6)  # float32 logits


def test_non_finite_logits_are_refused():
    s = Scores()
    bad = np.zeros((6, 3), np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(BenchError, match="candidate's logits hold NaN"):
        s.add(np.zeros((6, 3), np.float32), bad, [0] * 6)


def test_eval_kld_on_packages_prints_a_row_each(builds, tmp_path):
    """fp32 against itself: KLD 0 and same top 100% (an exact identity); int4 against fp32: above 0."""
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i} and the sea" for i in range(200)))
    ref = builds.package("tiny-llama", "fp32")
    proc = run_cli("eval", "--kld", ref, ref, builds.package("tiny-llama", "int4"), "--text", text, "--ctx", "32",
                   "-q", check=True)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| tiny-llama")]
    assert len(rows) == 2, proc.stdout
    same = rows[0].split("|")
    assert same[3].strip().startswith("0.0000") and same[4].strip() == "100.0%"
    assert float(rows[1].split("|")[3].split("±")[0]) > 0.001
    assert "second half of each scored" in proc.stdout


def test_a_gguf_candidate_without_llama_cpp_python_is_one_line(builds, tmp_path):
    pytest.importorskip("gguf")
    try:
        import llama_cpp  # noqa: F401
        pytest.skip("llama-cpp-python is installed here")
    except ImportError:
        pass
    from edgelm.export.gguf import smollm2_gguf

    proc = run_cli("eval", "--kld", builds.package("tiny-llama", "fp32"), smollm2_gguf(), "-q")
    assert proc.returncode == 2 and "needs llama-cpp-python" in proc.stderr and "Traceback" not in proc.stderr


def test_the_llamacpp_peer_is_skipped_with_its_reason_when_no_llama_bench(builds, monkeypatch):
    import shutil

    if shutil.which("llama-bench"):
        pytest.skip("llama-bench is on PATH here")
    from edgelm.export.gguf import smollm2_gguf

    monkeypatch.delenv("EDGELM_LLAMA_BENCH", raising=False)
    proc = run_cli("bench", builds.package("tiny-llama", "fp32"), "-p", "4", "-n", "2", "-r", "1", "--vs", "llamacpp",
                   "--gguf", smollm2_gguf())
    assert proc.returncode == 0, proc.stderr
    assert "llamacpp skipped: llamacpp peer needs llama.cpp's llama-bench" in proc.stdout
    proc = run_cli("bench", builds.package("tiny-llama", "fp32"), "-p", "4", "-n", "2", "-r", "1", "--vs", "llamacpp")
    assert proc.returncode == 0 and "llamacpp skipped: give --gguf FILE" in proc.stdout


def test_eval_kld_refuses_the_options_it_does_not_read(builds):
    """--ref, --chat, --no-perplexity and --window belong to the perplexity mode; --ctx to --kld (each was
    silently ignored before)."""
    pkg = builds.package("tiny-llama", "fp32")
    for extra, named in ((("--ref", pkg), "--ref"), (("--chat",), "--chat"), (("--no-perplexity",), "--no-perplexity"),
                         (("--window", "64"), "--window")):
        proc = run_cli("eval", "--kld", pkg, pkg, *extra)
        assert proc.returncode == 2 and f"{named} is not used by --kld" in proc.stderr, extra
    proc = run_cli("eval", pkg, "--ctx", "64")
    assert proc.returncode == 2 and "--ctx is the chunk length of --kld" in proc.stderr


def test_a_llama_bench_row_shows_no_load_time():
    """llama-bench reports no model load time; the worker's own "load" only read the GGUF header, so the row
    leaves load empty instead of showing that as llama.cpp's."""
    from edgelm.bench.report import render
    from edgelm.bench.runner import _row

    rounds = [{"prefill_s": 0.1, "steps_s": [0.01, 0.01], "rss": 1 << 20}]
    info = {"model": "m", "quant": "Q4_0", "load_unmeasured": True}
    row = _row("llamacpp", "pkg", info, "cpu", 2, 8, 2, 2.4, rounds, 1 << 20)
    assert row.load_s is None
    line = next(ln for ln in render([row], "md").splitlines() if ln.startswith("| llamacpp"))
    assert line.split("|")[7].strip() == ""  # the load s column
    assert _row("edgelm", "pkg", {"model": "m", "quant": "int4"}, "cpu", 2, 8, 2, 2.4, rounds, 1 << 20).load_s == 2.4
