"""llama.cpp as a peer: a GGUF file timed by llama.cpp's own `llama-bench`, never a dependency of edgelm.

The binary is the one the user names (`edgelm bench --llama-bench PATH`, or $EDGELM_LLAMA_BENCH), else
`llama-bench` on PATH; absent, the peer is skipped with that reason. Each round is one `llama-bench -r 1`
run of the round's pp and tg (its own warm-up off: the harness's first round is the warm-up), interleaved
with the other engines' rounds like any peer. What llama-bench times: the prompt's forward (pp) and tg
single-token decode steps, its load and sampling excluded, as edgelm's rows time them; a round's tg time is
spread evenly over its steps (llama-bench reports no per-step times), so this row's p90 equals its median;
its load time is left empty (llama-bench reports none). Peak memory is the llama-bench processes' (the worker's children's) maximum RSS.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgelm.bench.engines.base import Engine, EngineUnavailable, register

ENV = "EDGELM_LLAMA_BENCH"


def find_llama_bench() -> str | None:
    named = os.environ.get(ENV)
    if named:
        path = Path(named)
        path = path / "llama-bench" if path.is_dir() else path
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which("llama-bench")


@register("llamacpp")
class LlamaCppEngine(Engine):
    def __init__(self, target: str, ep: str, threads: int | None, **provider):
        super().__init__(target, ep, threads, **provider)
        if ep != "cpu":
            raise EngineUnavailable(f"the llamacpp peer runs on the CPU here, not {ep}")
        self.binary = find_llama_bench()
        if self.binary is None:
            raise EngineUnavailable(f"llamacpp peer needs llama.cpp's llama-bench: name it with --llama-bench PATH "
                                    f"(or ${ENV}), or put it on PATH")
        if not Path(target).is_file() or Path(target).suffix != ".gguf":
            raise EngineUnavailable(f"llamacpp peer needs a .gguf file (--gguf FILE), not {target}")
        self.vocab = _gguf_vocab(Path(target))

    def info(self) -> dict:
        # load_unmeasured: llama-bench reports no load time, and this worker's own "load" only read the header
        return {"quant": _gguf_type(Path(self.target)), "package_bytes": Path(self.target).stat().st_size,
                "ep": "cpu (llama.cpp)", "load_unmeasured": True}

    def vocab_size(self) -> int:
        return self.vocab

    def whole_round(self, prompt: list[int], tg: int) -> dict:
        """One llama-bench run of pp = len(prompt) and tg, as a round: prefill seconds and tg step times."""
        pp = len(prompt)
        cmd = [self.binary, "-m", self.target, "-p", str(pp), "-n", str(tg), "-r", "1", "-o", "json",
               "--no-warmup", *(["-t", str(self.threads)] if self.threads else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"llama-bench failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        tests = json.loads(proc.stdout)
        seconds = {("pp" if t["n_prompt"] else "tg"): t["avg_ns"] / 1e9 for t in tests}
        step = seconds.get("tg", 0.0) / max(tg, 1)
        return {"prefill_s": seconds["pp"], "steps_s": [step] * tg,
                "rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}

    def peak_rss(self) -> int:
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    def reset(self) -> None:  # each round is its own process
        pass


def _gguf_fields(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise EngineUnavailable("reading a GGUF file's header needs the gguf package (pip install gguf)") from None
    return GGUFReader(str(path))


def _gguf_vocab(path: Path) -> int:
    reader = _gguf_fields(path)
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None:
        raise EngineUnavailable(f"{path.name} has no tokenizer.ggml.tokens: not a llama.cpp model file")
    return len(field.data)


def _gguf_type(path: Path) -> str:
    """The file's type as llama.cpp names it (general.file_type), e.g. Q4_K_M; else the tensor types it holds."""
    reader = _gguf_fields(path)
    field = reader.fields.get("general.file_type")
    if field is not None:
        from gguf import LlamaFileType

        try:
            return LlamaFileType(int(np.asarray(field.parts[field.data[0]])[0])).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    return "/".join(sorted({t.tensor_type.name for t in reader.tensors}))
