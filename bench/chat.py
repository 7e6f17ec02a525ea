"""Chat-level benchmarks: what an app embedding edgelm sees.

- `multi_turn`: time to first token of the 5th turn of a conversation, with the KV cache of the turns
  before it reused (the default of Model.chat) vs a cold prefill of the same history.
- `server_overhead`: the same streamed chat request through `edgelm serve` (a separate process, the real
  `openai` client over loopback) vs the in-process API: time to first token and decode ms/token.

Timed with the public API: multi-turn TTFT is the time of a chat() call asking for one token; the server
comparison times a stream from the call to the first text event (TTFT) and from there to its end (decode).
Tokenization and the chat template are inside the time, as an app pays for them. Engines are
interleaved round by round; medians with the spread (min-max) of the rounds.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

QUESTIONS = [
    "What is the capital of France?",
    "Tell me one fact about its history.",
    "How many people live there?",
    "Name a famous museum there.",
    "Summarize our conversation in one sentence.",
]


@dataclass
class Measure:
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def line(self) -> str:
        lo, hi = min(self.samples), max(self.samples)
        return f"| {self.name} | {self.median:.1f} | {lo:.1f}-{hi:.1f} | {len(self.samples)} | {self.note} |"


def _timed(events) -> tuple[float, float, int]:
    """(TTFT s, decode s from the first text event to the end, completion tokens) of an event stream."""
    start = time.perf_counter()
    first = None
    for e in events:
        if first is None and (e.content or e.reasoning):
            first = time.perf_counter()
        last = e
    end = time.perf_counter()
    first = end if first is None else first  # no text at all (e.g. a synthetic model's bytes): the whole call
    return first - start, end - first, last.usage.completion_tokens


# An answer for models whose own answers are no text (synthetic weights over an offline tokenizer smaller than
# the model's vocabulary generate ids that tokenizer cannot decode); the report says when it was used.
FILLER = ("Paris has been the capital for most of the last thousand years. It sits on the Seine, and its "
          "museums, bridges and cafes draw visitors from all over the world every year.")


def conversation(model, turns: int, answer_tokens: int) -> tuple[list[dict], bool]:
    """The first `turns` - 1 turns with the model's own greedy answers (FILLER where an answer has no text),
    then the last question; and whether FILLER was used."""
    history: list[dict] = []
    filler = False
    for q in QUESTIONS[: turns - 1]:
        history.append({"role": "user", "content": q})
        answer = model.chat(history, max_new_tokens=answer_tokens, temperature=0.0).text
        filler = filler or not answer.strip()
        history.append({"role": "assistant", "content": answer if answer.strip() else FILLER})
    return history + [{"role": "user", "content": QUESTIONS[turns - 1]}], filler


def multi_turn(package: str, rounds: int = 5, answer_tokens: int = 64, threads: int | None = None,
               ep: str = "cpu") -> tuple[list[Measure], dict]:
    from edgelm.runtime import load

    model = load(package, ep=ep, threads=threads)
    history, filler = conversation(model, len(QUESTIONS), answer_tokens)
    warm = Measure("turn 5 TTFT, cache reused", "ms")
    cold = Measure("turn 5 TTFT, cold prefill", "ms")
    info = {}
    kw = {"max_new_tokens": 1, "temperature": 0.0, "ignore_eos": True, "stream": True}  # TTFT: the call's time
    for _ in range(rounds):
        for k in range(1, len(history) - 1, 2):  # replay turns 1-4 as an app would: each reuses the one before
            list(model.chat(history[:k], max_new_tokens=answer_tokens, temperature=0.0, stream=True))
        start = time.perf_counter()
        list(_recording(model.chat(history, **kw), info, "warm"))
        warm.samples.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        list(_recording(model.chat(history, reuse_cache=False, **kw), info, "cold"))
        cold.samples.append((time.perf_counter() - start) * 1e3)
    warm.note = f"prefilled {info['warm'].prompt_tokens - info['warm'].cached_tokens} of {info['warm'].prompt_tokens}"
    cold.note = f"prefilled {info['cold'].prompt_tokens} of {info['cold'].prompt_tokens}"
    return [warm, cold], {"prompt_tokens": info["cold"].prompt_tokens, "cached_tokens": info["warm"].cached_tokens,
                          "filler": filler}


def _recording(events, info: dict, key: str):
    for e in events:
        if e.usage is not None:
            info[key] = e.usage
        yield e


def server_overhead(package: str, rounds: int = 5, tokens: int = 128, threads: int | None = None,
                    ep: str = "cpu") -> list[Measure]:
    """In-process chat stream vs the same request streamed from `edgelm serve` in another process."""
    import openai

    from edgelm.runtime import load

    port = _free_port()
    args = [sys.executable, "-m", "edgelm.cli", "serve", str(package), "--port", str(port), "--ep", ep,
            "--model-id", "bench", *(("--threads", str(threads)) if threads else ())]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(port, server)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
        model = load(package, ep=ep, threads=threads)
        names = ("TTFT", "decode ms/token")
        local = [Measure(f"{n}, in-process API", "ms") for n in names]
        remote = [Measure(f"{n}, edgelm serve + openai client", "ms") for n in names]
        for r in range(rounds + 1):  # round 0 warms both up and is not recorded
            messages = [{"role": "system", "content": f"Round {r}. You are a helpful assistant."},
                        {"role": "user", "content": "Write a long story about a lighthouse keeper."}]
            a = _timed(model.chat(messages, max_new_tokens=tokens, temperature=0.0, ignore_eos=True, stream=True))
            b = _timed_openai(client.chat.completions.create(
                model="bench", messages=messages, max_tokens=tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
            if r:
                for measures, (ttft, decode, n) in ((local, a), (remote, b)):
                    measures[0].samples.append(ttft * 1e3)
                    measures[1].samples.append(decode * 1e3 / max(n - 1, 1))
        return [local[0], remote[0], local[1], remote[1]]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _timed_openai(stream) -> tuple[float, float, int]:
    start = time.perf_counter()
    first, tokens = None, 0
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if first is None and delta is not None and (delta.content or (delta.model_extra or {}).get("reasoning_content")):
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    first = end if first is None else first
    return first - start, end - first, tokens


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc, seconds: float = 120) -> None:
    import urllib.request

    from edgelm.errors import BenchError

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"edgelm serve exited: {proc.stderr.read()[-500:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise BenchError("edgelm serve did not become healthy within 2 minutes")


def report(package: str, rounds: int = 5, threads: int | None = None, ep: str = "cpu") -> str:
    """Both benchmarks as markdown, with what makes them reproducible."""
    from edgelm.bench.system import cpu_model, versions

    turns, sizes = multi_turn(package, rounds, threads=threads, ep=ep)
    overhead = server_overhead(package, rounds, threads=threads, ep=ep)
    head = "| measure | median ms | min-max | rounds | note |\n|---|---|---|---|---|"
    ratio = turns[1].median / turns[0].median
    extra = overhead[3].median - overhead[2].median
    lines = [f"package {package}, {ep}, threads {threads or 'default'}, {cpu_model()}, {versions('onnxruntime')}",
             "", head, *(m.line() for m in turns), "",
             f"turn 5 ({sizes['prompt_tokens']} prompt tokens, {sizes['cached_tokens']} reused): "
             f"cold / reused TTFT = {ratio:.1f}x" + (" (the model's answers had no text: a fixed answer stood in "
                                                     "for them)" if sizes["filler"] else ""),
             "", head, *(m.line() for m in overhead), "",
             f"server overhead per token: {extra:+.2f} ms ({100 * extra / overhead[2].median:+.1f}%), "
             f"TTFT {overhead[1].median - overhead[0].median:+.1f} ms"]
    return "\n".join(lines) + "\n"


def rows(measures: list[Measure]) -> list[dict]:
    return [asdict(m) | {"median": m.median} for m in measures]
