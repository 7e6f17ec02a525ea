"""A benchmark worker: one engine in its own process, driven by JSON lines on stdin/stdout.

Commands: {"cmd": "load", "engine", "target", "ep", "threads", "strict", "provider_options"} -> {"load_s", "info", "vocab"};
{"cmd": "round", "prompt": [...], "tg": N} -> {"prefill_s", "steps_s", "rss"};
{"cmd": "bandwidth", "threads"} -> {"gbs"} (the memory read roofline, see system.read_bandwidth);
{"cmd": "finish"} -> {"peak_rss"}. A failure answers {"error": message, "skip": bool}.

One process per engine and configuration keeps load time and peak memory honest: nothing another engine
loaded counts against this one.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from edgelm.bench.system import current_rss_bytes, peak_rss_bytes
from edgelm.errors import EdgeLMError, first_line


def one_round(engine, prompt: list[int], tg: int) -> dict:
    """Time one prefill (to the first token) and `tg` single-token decode steps (an engine that is a whole
    benchmark tool of its own, llama-bench, times its round itself)."""
    if hasattr(engine, "whole_round"):
        return engine.whole_round(prompt, tg)
    engine.reset()
    ids = np.asarray(prompt, dtype=np.int64)
    t0 = time.perf_counter()
    token = engine.prefill(ids)
    prefill = time.perf_counter() - t0
    steps = []
    for _ in range(tg):
        t0 = time.perf_counter()
        token = engine.step(token)
        steps.append(time.perf_counter() - t0)
    return {"prefill_s": prefill, "steps_s": steps, "rss": current_rss_bytes()}


def serve(stdin=sys.stdin, stdout=sys.stdout) -> None:
    from edgelm.bench.engines import EngineUnavailable, get_engine

    engine = None
    for line in stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "load":
                start = time.perf_counter()
                engine = get_engine(msg["engine"])(msg["target"], msg["ep"], msg.get("threads"),
                                                   strict=msg.get("strict"),
                                                   provider_options=msg.get("provider_options") or {})
                reply = {"load_s": time.perf_counter() - start, "info": engine.info(), "vocab": engine.vocab_size()}
            elif msg["cmd"] == "round":
                reply = one_round(engine, msg["prompt"], msg["tg"])
            elif msg["cmd"] == "bandwidth":
                from edgelm.bench.system import read_bandwidth

                reply = {"gbs": read_bandwidth(msg["threads"])}
            elif msg["cmd"] == "finish":
                reply = {"peak_rss": engine.peak_rss() if hasattr(engine, "peak_rss") else peak_rss_bytes()}
            else:
                reply = {"error": f"unknown command {msg['cmd']!r}", "skip": False}
        except EngineUnavailable as exc:
            reply = {"error": str(exc), "skip": True}
        except EdgeLMError as exc:
            reply = {"error": str(exc), "skip": False}
        except Exception as exc:  # a peer's own failure: report it, the coordinator decides
            reply = {"error": f"{type(exc).__name__}: {first_line(exc)}", "skip": False}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
        if msg.get("cmd") == "finish":
            return


def die_with_parent() -> None:
    """Never outlive the coordinator: on Linux the kernel sends SIGKILL when the parent dies (a killed
    `edgelm bench` once left a 16 GB worker running); elsewhere the closed stdin ends `serve` once the
    current command is done."""
    try:
        import ctypes
        import os
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call above
            os._exit(1)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    die_with_parent()
    serve()
