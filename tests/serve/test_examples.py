"""The examples in examples/ run as docs/apps.md shows them."""

import subprocess
import sys

from edgelm.runtime import load
from edgelm.serve import Running, create_app
from tests.conftest import ROOT


def run_example(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_chat_example(builds):
    proc = run_example("chat.py", builds.package("tiny-llama", "fp32"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("reused from the turn before") == 2 and "stopped: " in proc.stdout


def test_openai_client_example(builds):
    package = builds.package("tiny-llama", "fp32")
    want = load(package).chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=64)
    with Running(create_app(load(package), "tiny")) as server:
        proc = run_example("openai_client.py", server.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(want.text) and f"[{len(want.token_ids)} tokens]" in proc.stdout
