"""Nothing silent: every long-running command announces each stage before it starts, as plain lines when
stderr is not a terminal and as bars when it is; `-q` silences it. No timing is asserted (the silences this
removed are measured in the session notes); the order of the stage lines is."""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from edgelm import progress as progress_module
from edgelm.export.gguf import smollm2_gguf
from edgelm.progress import Progress
from tests.conftest import ROOT, run_cli


def stages(stderr: str) -> list[str]:
    """The stage names announced, in order (plain mode: `edgelm: NAME ...`)."""
    return [line[len("edgelm: "):-len(" ...")] for line in stderr.splitlines()
            if line.startswith("edgelm: ") and line.endswith(" ...")]


def assert_in_order(announced: list[str], expected: list[str]) -> None:
    """Each expected prefix matches an announced stage, in this order."""
    at = 0
    for want in expected:
        while at < len(announced) and not announced[at].startswith(want):
            at += 1
        assert at < len(announced), f"stage {want!r} not announced (in order) among {announced}"
        at += 1


def test_plain_lines_say_progress_and_time_left(monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_EVERY", 0.0)
    monkeypatch.setattr(progress_module, "DONE_AFTER", 0.0)
    out = io.StringIO()
    with Progress(stream=out, tty=False).stage("quantize", total=4, unit="layer") as s:
        for _ in range(4):
            s.update()
    lines = out.getvalue().splitlines()
    assert lines[0] == "edgelm: quantize ..."
    assert lines[1] == "edgelm: quantize: 1/4 layer"  # no estimate from one unit
    assert lines[2].startswith("edgelm: quantize: 2/4 layer, about ") and lines[2].endswith(" s left")
    assert lines[-1].startswith("edgelm: quantize: done in ")
    out = io.StringIO()
    with Progress(enabled=False, stream=out).stage("x", total=2) as s:
        s.update(2)
    assert out.getvalue() == ""


def test_a_terminal_gets_bars_not_lines():
    out = io.StringIO()
    with Progress(stream=out, tty=True).stage("quantize", total=3, unit="layer") as s:
        for _ in range(3):
            s.update()
    text = out.getvalue()
    assert "quantize" in text and "3/3" in text and "\r" in text and "edgelm: quantize ..." not in text


def test_export_announces_every_stage(tmp_path):
    proc = run_cli("export", "--synthetic", "tiny-llama", "-o", tmp_path / "pkg", check=True)
    assert_in_order(stages(proc.stderr), [
        "build tiny-llama with random weights", "read the model folder", "build the int4 graph (awq",
        "write package", "self-check: run the package", "self-check: the source model in transformers"])
    quiet = run_cli("export", "--synthetic", "tiny-llama", "-o", tmp_path / "q", "-q", check=True)
    assert stages(quiet.stderr) == []


@pytest.mark.slow
def test_gguf_conversion_announces_its_stages(tmp_path):
    proc = run_cli("export", smollm2_gguf(), "-o", tmp_path / "pkg", "--quant", "int8", "--no-check", check=True)
    assert_in_order(stages(proc.stderr), [
        "read SmolLM2-135M-Instruct.Q4_1.gguf's tokenizer", "dequantize SmolLM2-135M-Instruct.Q4_1.gguf's tensors",
        "save it as a transformers folder", "read the model folder", "build the int8 graph", "write package"])
    assert "\r" not in proc.stderr  # transformers' own bar reports to edgelm's stage instead of redrawing


def test_eval_and_bench_announce_loads_and_passes(builds):
    package, hf = builds.package("tiny-llama", "fp32"), builds.hf("tiny-llama")
    proc = run_cli("eval", package, "--ref", hf, check=True)
    assert_in_order(stages(proc.stderr), [
        f"load {package.name} on cpu", f"load the reference {hf}", "perplexity and divergence",
        "greedy agreement with the reference"])
    proc = run_cli("bench", package, "--vs", "torch", "--hf", hf, "--eval", "-p", "8", "-n", "4", "-r", "1",
                   check=True)
    assert_in_order(stages(proc.stderr), [
        "load edgelm", "load torch", "bench pp8 tg4 on cpu", f"load {package.name} on cpu", "perplexity"])


def test_a_terminal_export_draws_bars(tmp_path):
    """stderr on a pseudo-terminal: tqdm bars (carriage-return redraws), no plain stage lines."""
    main, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal's size
    proc = subprocess.Popen([sys.executable, "-m", "edgelm.cli", "export", "--synthetic", "tiny-llama", "-o",
                             str(tmp_path / "pkg"), "--no-check"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=follower, text=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "build the int4 graph" in text and "\r" in text and "layer" in text
    assert stages(text.replace("\r\n", "\n")) == []
