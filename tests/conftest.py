"""Shared fixtures: tiny synthetic models and packages built once per session, and the real SmolLM2.

The rule for thresholds: every bound in a test states its independent reference (PyTorch/transformers,
onnxruntime's own kernels, exact math written in the test, a documented format re-implemented in the test)
and the value measured against it, in the test's docstring or beside the bound; a bound more than ~2x looser
than what was measured says why. A test earns its place by failing when the code is wrong: plant the bug once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The WebGPU plugin lists a software adapter (Mesa's lavapipe, `make test` installs it) only with this set
# before it registers: set for the test run only, never by edgelm itself (auto never picks a software adapter)
os.environ.setdefault("ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER", "1")

# fuzz tests (hypothesis): the same examples on every run, so CI is reproducible; no example database
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("edgelm", derandomize=True, database=None)
    _hypothesis_settings.load_profile("edgelm")
except ImportError:  # only the fuzz tests need it
    pass


class Builds:
    """Session cache of HF folders and packages, keyed by what they are."""

    def __init__(self, base: Path):
        self.base = base
        self.cache: dict[tuple, Path] = {}

    def hf(self, preset: str) -> Path:
        key = ("hf", preset)
        if key not in self.cache:
            from edgelm.export.synthetic import build_synthetic

            self.cache[key] = build_synthetic(preset, self.base / f"{preset}-hf", seed=0)
        return self.cache[key]

    def package(self, preset: str, quant: str, backend: str = "auto") -> Path:
        key = ("pkg", preset, quant, backend)
        if key not in self.cache:
            from edgelm.export import ExportConfig, export_model

            out = self.base / f"{preset}-{quant}-{backend}"
            export_model(self.source(preset), out, ExportConfig(quant=quant, backend=backend, progress=False))
            self.cache[key] = out
        return self.cache[key]

    def npu(self, preset: str, context: int = 64, chunk: int = 16, **knobs) -> Path:
        """An npu-qnn package (static QDQ pair, compiled on the QNN HTP simulator); `knobs`: NpuConfig fields."""
        key = ("npu", preset, context, chunk, *sorted(knobs.items()))
        if key not in self.cache:
            from edgelm.export import ExportConfig, export_model
            from edgelm.export.config import NpuConfig

            out = self.base / "-".join(map(str, (preset, "npu", context, chunk, *(v for _, v in sorted(knobs.items())))))
            config = ExportConfig(target="npu-qnn", npu=NpuConfig(context=context, chunk=chunk, **knobs),
                                  progress=False)
            export_model(self.source(preset), out, config)
            self.cache[key] = out
        return self.cache[key]

    def case(self, name: str) -> tuple[Path, Path]:
        """A config-contract case (tests/export/contract_cases.py): (folder to export, 4.x reference folder)."""
        key = ("case", name)
        if key not in self.cache:
            from tests.export.contract_cases import build_case

            self.cache[key] = build_case(name, self.base)
        return self.cache[key]

    def r1(self) -> tuple[Path, Path]:
        """(HF folder, fp32 package) of the tiny DeepSeek-R1-Distill-like model (tests/r1_distill.py)."""
        key = ("r1",)
        if key not in self.cache:
            from edgelm.export import ExportConfig, export_model
            from tests.r1_distill import build_r1_tiny

            hf = build_r1_tiny(self.base / "r1-hf")
            export_model(hf, self.base / "r1-fp32", ExportConfig(quant="fp32", progress=False))
            self.cache[key] = (hf, self.base / "r1-fp32")
        return self.cache[key]

    def source(self, preset: str) -> Path:
        return self.smollm2_hf() if preset == "smollm2" else self.hf(preset)

    def smollm2_hf(self) -> Path:
        key = ("hf", "smollm2")
        if key not in self.cache:
            from edgelm.export.gguf import gguf_to_hf, smollm2_gguf

            self.cache[key] = gguf_to_hf(smollm2_gguf(), self.base / "smollm2-hf")
        return self.cache[key]


@pytest.fixture(scope="session", autouse=True)
def _verify_cache(tmp_path_factory):
    """Verified-file stamps (edgelm.integrity) in a folder of the test run's own, not the user's cache."""
    import os

    os.environ["EDGELM_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgelm-cache"))


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> Builds:
    return Builds(tmp_path_factory.mktemp("builds"))


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run `edgelm ARGS` in a fresh interpreter, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgelm.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edgelm {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def torch_ref(builds):
    """PyTorch fp32 reference per preset: .continuation(ids, n) greedy tokens, .logits(ids) (seq, vocab)."""
    from edgelm.bench.quality import TorchReference

    refs: dict[str, TorchReference] = {}

    def get(preset: str) -> TorchReference:
        if preset not in refs:
            refs[preset] = TorchReference(builds.source(preset))
        return refs[preset]

    return get
