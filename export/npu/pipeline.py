"""`--target npu-qnn`: HF folder -> static fp32 graph pair -> shared calibration -> QDQ pair -> EP-context.

    safetensors ─> prefill fp32 (N=chunk) ─┐                         ┌─> prefill.onnx (QDQ) ─┐
               └─> decode fp32 (N=1) ──────┼─> calibrate (CPU, both) ┤                       ├─> compile on
                                           │   one set of ranges ────┴─> decode.onnx (QDQ) ──┘   QNN (strict)
    rotary table ─> rotary.npy ────────────┘

The fp32 graphs live in a work folder inside the staging folder and are gone before the manifest is
written. Compiling on QNN in strict mode doubles as the check that every node runs on the HTP: a node it
rejects fails the export with ProviderFallback, naming the nodes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgelm.errors import ExportError, ProviderUnavailable
from edgelm.export.config import NpuConfig
from edgelm.export.npu.calibrate import calibrate, range_overrides
from edgelm.export.npu.graph import STATIC_IO, StaticShape, build_static, rotary_table
from edgelm.export.npu.qdq import QdqScheme, producers, quant_type, quantize_graph
from edgelm.manifest import Quantization, StaticGraphs

ROLES = ("prefill", "decode")
ROTARY_FILE = "rotary.npy"


def check_npu_config(npu: NpuConfig) -> None:
    """Cheap checks before any work."""
    quant_type(npu.activations), quant_type(npu.weights)
    if npu.chunk < 2 or npu.context <= npu.chunk:
        raise ExportError(f"--chunk must be at least 2 and below --context (got chunk {npu.chunk}, "
                          f"context {npu.context})")


def export_npu_qnn(source, stage: Path, npu: NpuConfig, progress: bool = True) -> tuple[StaticGraphs, Quantization]:
    """Write prefill.onnx, decode.onnx (QDQ), rotary.npy and, when QNN is here, their EP-context models."""
    arch = source.arch
    if npu.context > arch.context_length:
        raise ExportError(f"--context {npu.context} exceeds the model's {arch.context_length} positions")
    work = stage / ".work"
    work.mkdir()
    bars = _Bars(progress)
    fp32 = {}
    with bars("build fp32 graphs", 2 * arch.num_layers, "layer") as bar:
        for role, n in zip(ROLES, (npu.chunk, 1)):
            fp32[role] = build_static(arch, source.path, work, f"{role}.onnx", StaticShape(n, npu.context), bar)
    np.save(stage / ROTARY_FILE, rotary_table(arch, npu.context))
    static = StaticGraphs("prefill.onnx", "decode.onnx", npu.chunk, npu.context, ROTARY_FILE)
    manifest = SimpleNamespace(static=static, kv_cache=arch.kv_cache(), io=STATIC_IO)

    from edgelm.runtime.static import StaticDecoder

    windows = calibration_windows(source, npu)
    with bars("calibrate", len(windows), "window") as bar:
        ranges, samples = calibrate(fp32, lambda s: StaticDecoder(s, manifest, stage), windows,
                                    npu.calibration_decode, bar)
    overrides = range_overrides(ranges, producers(fp32["prefill"]), npu.widen)
    scheme = QdqScheme(npu.activations, npu.weights)
    with bars(f"quantize QDQ {scheme.label}", len(ROLES), "graph") as bar:
        for role in ROLES:
            quantize_graph(fp32[role], stage / f"{role}.onnx", samples[role], overrides, scheme)
            bar.update(1)
    shutil.rmtree(work)
    if npu.compile:
        static = _compile(stage, static, bars)
    quant = Quantization(mode="qdq", method=f"QDQ {scheme.label} (per-tensor weights)",
                         bits=int("".join(c for c in npu.weights if c.isdigit())))
    return static, quant


def calibration_windows(source, npu: NpuConfig) -> list[list[int]]:
    """`calibration_samples` windows of the shipped corpus, each a bit over two prefill chunks (so full and
    padded chunks are both seen), spread over the text."""
    from tokenizers import Tokenizer

    from edgelm.data import CORPUS

    ids = Tokenizer.from_file(str(source.path / "tokenizer.json")).encode(CORPUS.read_text(encoding="utf-8")).ids
    length = max(2, min(npu.context - npu.calibration_decode, 2 * npu.chunk + npu.chunk // 2))
    ids = ids * (1 + length // max(len(ids), 1))  # a tiny corpus wraps around
    step = max(1, (len(ids) - length) // max(npu.calibration_samples, 1))
    return [ids[i * step: i * step + length] for i in range(npu.calibration_samples)]


def _compile(stage: Path, static: StaticGraphs, bars) -> StaticGraphs:
    """Compile both graphs on QNN in strict mode, keeping the EP-context models; skip if QNN is absent."""
    from dataclasses import replace

    from edgelm.runtime.providers import resolve
    from edgelm.runtime.session import create_session

    try:
        qnn = resolve("qnn")
    except ProviderUnavailable:
        return static  # compiled on first load instead (--context-cache)
    compiled = {}
    with bars("compile on QNN", len(ROLES), "graph") as bar:
        for role in ROLES:
            create_session(stage / f"{role}.onnx", qnn, strict=True, context_cache=stage)
            compiled[role] = f"{role}.{qnn.spec.name}_ctx.onnx"
            bar.update(1)
    return replace(static, context_models=compiled)


class _Bars:
    """One tqdm bar per stage (stderr), or none."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, desc: str, total: int, unit: str):
        if not self.enabled:
            import contextlib

            return contextlib.nullcontext(SimpleNamespace(update=lambda n=1: None))
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False)
