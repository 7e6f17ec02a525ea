"""`edgelm chat` and `edgelm serve` as a user runs them: in a fresh process, stdin/stdout, signals."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import openai

from edgelm.runtime import load
from tests.conftest import ROOT, run_cli


def edgelm(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgelm.cli", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_terminal_chat_keeps_the_history_and_resets(builds):
    """The printed answers are the in-process API's answers to the same growing conversation."""
    package = builds.package("tiny-llama", "fp32")
    turns = ["Hello there", "Tell me about the sea.", "/reset", "Tell me about the sea."]
    proc = subprocess.run([sys.executable, "-m", "edgelm.cli", "chat", str(package), "--ep", "cpu",
                           "--max-new-tokens", "12"], input="\n".join(turns + ["/exit"]) + "\n",
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    model = load(package)
    history, want = [], []
    for turn in turns:
        if turn == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": turn})
        answer = model.chat(history, max_new_tokens=12).text
        history.append({"role": "assistant", "content": answer})
        want.append(answer)
    assert proc.stdout.split("\n")[:3] == want
    assert "(new conversation)" in proc.stderr


def test_ctrl_c_stops_the_answer_not_the_program(builds):
    _, package = builds.r1()  # a 151936-token vocabulary: slow enough per token to interrupt
    proc = edgelm("chat", package, "--ep", "cpu", "--max-new-tokens", "1000", stdin=subprocess.PIPE)
    proc.stdin.write("What is 2 + 3?\n")
    proc.stdin.flush()
    assert proc.stdout.read(16)  # the answer is being written
    proc.send_signal(signal.SIGINT)
    proc.stdin.write("/exit\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "(stopped)" in err, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_and_stops_on_ctrl_c(builds):
    package = builds.package("tiny-llama", "fp32")
    port = free_port()
    proc = edgelm("serve", package, "--port", port, "--ep", "cpu", "--model-id", "tiny")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert json.loads(r.read())["status"] == "ok"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        got = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
        assert got.choices[0].message.content == load(package).chat(
            [{"role": "user", "content": "Hi"}], max_new_tokens=8).text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode in (0, 130)


def test_serve_refuses_bad_flags_at_once(builds):
    proc = run_cli("serve", builds.package("tiny-llama", "fp32"), "--port", "70000")
    assert proc.returncode == 2 and "--port 70000" in proc.stderr
