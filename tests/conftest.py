"""Shared fixtures: tiny synthetic models and packages built once per session, and the real SmolLM2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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

    def package(self, preset: str, quant: str) -> Path:
        key = ("pkg", preset, quant)
        if key not in self.cache:
            from edgelm.export import ExportConfig, export_model

            out = self.base / f"{preset}-{quant}"
            export_model(self.source(preset), out, ExportConfig(quant=quant, progress=False))
            self.cache[key] = out
        return self.cache[key]

    def source(self, preset: str) -> Path:
        return self.smollm2_hf() if preset == "smollm2" else self.hf(preset)

    def smollm2_hf(self) -> Path:
        key = ("hf", "smollm2")
        if key not in self.cache:
            from edgelm.export.gguf import gguf_to_hf, smollm2_gguf

            self.cache[key] = gguf_to_hf(smollm2_gguf(), self.base / "smollm2-hf")
        return self.cache[key]


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


class TorchReference:
    """PyTorch fp32 reference for an HF folder: prefill logits and greedy generation."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.model.generation_config.eos_token_id = None  # compare fixed-length greedy runs

    def logits(self, ids: list[int]):
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids])).logits[0].numpy()  # (seq, vocab)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        with self.torch.no_grad():
            out = self.model.generate(
                self.torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                attention_mask=self.torch.ones(1, len(ids), dtype=self.torch.long),
            )
        return out[0, len(ids):].tolist()


@pytest.fixture(scope="session")
def torch_ref(builds):
    refs: dict[str, TorchReference] = {}

    def get(preset: str) -> TorchReference:
        if preset not in refs:
            refs[preset] = TorchReference(builds.source(preset))
        return refs[preset]

    return get
