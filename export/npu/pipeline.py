"""`--target npu-qnn`: HF folder -> static fp32 graph pair -> shared calibration -> QDQ pair -> EP-context.

    safetensors ─> prefill fp32 (N=chunk) ─┐                         ┌─> prefill.onnx (QDQ) ─┐  (one weights.data)
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
from edgelm.export.calibration import calibration_windows
from edgelm.export.config import NpuConfig
from edgelm.export.npu.calibrate import calibrate, range_overrides
from edgelm.export.npu.graph import (EIGHT_BIT_SIDE, KEYS_TENSOR, STATIC_IO, StaticShape, build_static,
                                     rotary_table, smoothing_factors)
from edgelm.export.npu.shared_data import share_external_data
from edgelm.export.npu.qdq import QdqScheme, producers, quant_type, quantize_graph
from edgelm.manifest import Quantization, StaticGraphs

ROLES = ("prefill", "decode")
ROTARY_FILE = "rotary.npy"


def check_npu_config(npu: NpuConfig) -> None:
    """Cheap checks before any work."""
    quant_type(npu.activations), quant_type(npu.weights)
    if npu.per_channel and not npu.weights.startswith("int"):
        raise ExportError(f"per-channel weights are signed: use --qdq-weights int8 or int4 (got {npu.weights}), "
                          "or --per-tensor")
    if npu.chunk < 2 or npu.context <= npu.chunk:
        raise ExportError(f"--chunk must be at least 2 and below --context (got chunk {npu.chunk}, "
                          f"context {npu.context})")


def export_npu_qnn(source, stage: Path, npu: NpuConfig, progress: bool = True) -> tuple[StaticGraphs, Quantization]:
    """Write prefill.onnx, decode.onnx (QDQ, sharing weights.data), rotary.npy and, when QNN is here, their
    EP-context models."""
    arch = source.arch
    if npu.context > arch.context_length:
        raise ExportError(f"--context {npu.context} exceeds the model's {arch.context_length} positions")
    window = arch.smallest_window
    if window and npu.context > window:  # the static graphs attend over everything
        raise ExportError(f"--context {npu.context} exceeds the model's attention window {window}; "
                          f"export with --context {window} or less")
    work = stage / ".work"
    work.mkdir()
    bars = _Bars(progress)
    static = StaticGraphs("prefill.onnx", "decode.onnx", npu.chunk, npu.context, ROTARY_FILE)
    manifest = SimpleNamespace(static=static, kv_cache=arch.kv_cache(), io=STATIC_IO)
    np.save(stage / ROTARY_FILE, rotary_table(arch, npu.context))
    length = max(2, min(npu.context - npu.calibration_decode, 2 * npu.chunk + npu.chunk // 2))
    windows = calibration_windows(source, npu.calibration_samples, length)  # full and padded chunks

    from edgelm.runtime.static import StaticDecoder

    def build_and_calibrate(step: str, smoothing: dict | None, channels: tuple[str, ...] = ()):
        fp32, folder = {}, work / step.replace("/", "of")
        folder.mkdir()
        with bars(f"{step}: fp32 graphs", 2 * arch.num_layers, "layer") as bar:
            for role, n in zip(ROLES, (npu.chunk, 1)):
                fp32[role] = build_static(arch, source.path, folder, f"{role}.onnx", StaticShape(n, npu.context), bar,
                                          smoothing)
        with bars(f"{step}: calibrate", len(windows), "window") as bar:
            return fp32, *calibrate(fp32, lambda s: StaticDecoder(s, manifest, stage), windows,
                                    npu.calibration_decode, bar, channels)

    smoothing = None
    if npu.smooth_keys:  # a first pass measures K's channel ranges, the second builds with them flattened
        *_, channel_max = build_and_calibrate("1/2", None, (KEYS_TENSOR,))
        smoothing = smoothing_factors(channel_max, arch, npu.smooth_keys)
    fp32, ranges, samples, _ = build_and_calibrate("2/2" if smoothing else "1/1", smoothing)
    overrides = range_overrides(ranges, producers(fp32["prefill"]), npu.widen, EIGHT_BIT_SIDE)
    scheme = QdqScheme(npu.activations, npu.weights, npu.per_channel)
    with bars(f"quantize QDQ {scheme.label}", len(ROLES), "graph") as bar:
        for role in ROLES:
            quantize_graph(fp32[role], stage / f"{role}.onnx", samples[role], overrides, scheme)
            bar.update(1)
    share_external_data(stage, [f"{role}.onnx" for role in ROLES])  # identical quantized weights, stored once
    shutil.rmtree(work)
    if npu.compile:
        static = _compile(stage, static, bars)
    quant = Quantization(mode="qdq", method=scheme.describe(), bits=scheme.weight_bits, symmetric=npu.per_channel)
    return static, quant


def _compile(stage: Path, static: StaticGraphs, bars) -> StaticGraphs:
    """Compile both graphs on QNN in strict mode, keeping the EP-context models; skip if QNN is absent."""
    from dataclasses import replace

    from edgelm.runtime.partition import partition_of
    from edgelm.runtime.providers import resolve
    from edgelm.runtime.session import create_session

    try:
        qnn = resolve("qnn")
    except ProviderUnavailable:
        return static  # compiled on first load instead (--context-cache)
    compiled, nodes = {}, {}
    with bars("compile on QNN", len(ROLES), "graph") as bar:
        for role in ROLES:  # strict: a node the HTP rejects raises ProviderFallback, naming it
            session = create_session(stage / f"{role}.onnx", qnn, strict=True, context_cache=stage)
            nodes[role] = partition_of(session, qnn.spec.ort_name).on_requested()
            compiled[role] = f"{role}.{qnn.spec.name}_ctx.onnx"
            bar.update(1)
    return replace(static, context_models=compiled, compiled_nodes=nodes)


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
