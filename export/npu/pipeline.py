"""`--target npu-qnn`: HF folder -> static fp32 graph -> calibration -> QDQ graph -> EP-context.

    embedding ─> embeddings.npy (int8, a scale per 64 values: the runtime looks tokens up, npu.embedding)
    safetensors ─> fp32 graph (N = chunk) ─> calibrate (CPU: chunks, then ─> model.onnx (QDQ) ─> compile on
    rotary table ─> rotary.npy                one-token steps, padded)       + weights.data      QNN (strict)

One graph serves prefill and decode (a decode step runs one real token, padded to the chunk): the device
holds one copy of the weights. (Two graphs, a chunk one and a one-token one, would need QNN's HTP weight
sharing to share their weights; a weight-shared context binary compiles on x86 but the HTP simulator here
refuses to load it, QNN_COMMON_ERROR_NOT_SUPPORTED, so it could not be verified.) The graph attends over
context + chunk - 1 positions, so the package's whole --context is usable with a chunk-sized last run.

The fp32 graphs live in a work folder inside the staging folder and are gone before the manifest is
written. Compiling on QNN in strict mode doubles as the check that every node runs on the HTP: a node it
rejects fails the export with ProviderFallback, naming the nodes. Once compiled, the QDQ graph and its
weights leave the package (`drop_qdq`) unless --keep-qdq asks for them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgelm.errors import ExportError, ProviderUnavailable
from edgelm.export.calibration import calibration_windows
from edgelm.export.config import NpuConfig
from edgelm.export.npu.graph import MASKED, STATIC_IO, StaticShape, rotary_table
from edgelm.export.npu.layerwise import Segments, schedule, stitch
from edgelm.export.native.weights import SafetensorsReader
from edgelm.export.npu.embedding import write_embedding_table
from edgelm.export.npu.shared_data import share_external_data
from edgelm.export.npu.qdq import QdqScheme, quant_type
from edgelm.manifest import Quantization, StaticGraphs
from edgelm.progress import Progress, as_progress

GRAPH_FILE = "model.onnx"
ROTARY_FILE = "rotary.npy"


def check_npu_config(npu: NpuConfig) -> None:
    """Cheap checks before any work."""
    quant_type(npu.activations), quant_type(npu.weights)
    if npu.per_channel and not npu.weights.startswith("int"):
        raise ExportError(f"per-channel weights are signed: use --qdq-weights int8 or int4 (got {npu.weights}), "
                          "or --per-tensor")
    if not 0 <= npu.w4_max_cost < float("inf"):
        raise ExportError(f"--w4-max-cost must be a number from 0 (got {npu.w4_max_cost})")
    if npu.calibration not in ("auto", "awq", "none"):
        raise ExportError(f"--calibration for npu-qnn is auto, awq or none (got {npu.calibration!r})")
    if npu.calibration == "awq" and not QdqScheme(npu.activations, npu.weights, npu.per_channel).lpbq:
        raise ExportError("--calibration awq scales int4 per-channel (LPBQ) weights only; give --qdq-weights int4 "
                          f"(got {npu.weights}{', --per-tensor' if not npu.per_channel else ''}) or drop it")
    if npu.block_size < 16 or npu.block_size & (npu.block_size - 1):
        raise ExportError(f"--block-size for LPBQ weights must be a power of two from 16 (got {npu.block_size})")
    if npu.chunk < 2 or npu.context <= npu.chunk:
        raise ExportError(f"--chunk must be at least 2 and below --context (got chunk {npu.chunk}, "
                          f"context {npu.context})")


def export_npu_qnn(source, stage: Path, npu: NpuConfig, progress: bool | Progress = True
                   ) -> tuple[StaticGraphs, Quantization]:
    """Write model.onnx (QDQ) + weights.data, rotary.npy, the embedding table and, when QNN is here, the
    graph's EP-context model."""
    arch = source.arch
    if npu.context > arch.context_length:
        raise ExportError(f"--context {npu.context} exceeds the model's {arch.context_length} positions")
    window = arch.smallest_window
    if window and npu.context > window:  # the static graphs attend over everything
        raise ExportError(f"--context {npu.context} exceeds the model's attention window {window}; "
                          f"export with --context {window} or less")
    switch = arch.rope_switch
    if switch is not None and npu.context > switch:  # the table holds one factor set: the short one
        raise ExportError(f"--context {npu.context} passes the length where longrope switches to its long factors "
                          f"({switch}); the NPU graph rotates with the short ones: export with --context {switch} "
                          "or less")
    work = stage / ".work"
    work.mkdir()
    bars = as_progress(progress).stage
    graph_context = npu.context + npu.chunk - 1  # the last run's N - 1 padded rows sit past --context
    static = StaticGraphs(GRAPH_FILE, GRAPH_FILE, npu.chunk, graph_context, ROTARY_FILE, decode_tokens=npu.chunk,
                          mask_value=mask_value(arch))
    manifest = SimpleNamespace(static=static, kv_cache=arch.kv_cache(), io=STATIC_IO)
    np.save(stage / ROTARY_FILE, rotary_table(arch, graph_context, longest=npu.context))
    write_embedding_table(SafetensorsReader(source.path).get(arch.tensor("embed")), stage / static.embedding_file,
                          stage / static.embedding_scales_file, scale=arch.embedding_scale or 1.0)
    decode = min(npu.calibration_decode, npu.context // 2)  # a window fits the context (a small one too)
    length = max(2, min(npu.context - decode, 2 * npu.chunk + npu.chunk // 2))
    # windows of the prompt part plus the decode steps, fed teacher-forced (see layerwise)
    windows = calibration_windows(source, npu.calibration_samples, length + decode)

    from edgelm.runtime.static import StaticDecoder

    driver = StaticDecoder({"prefill": None, "decode": None}, manifest, stage)  # plans runs and builds feeds only
    scheme = QdqScheme(npu.activations, npu.weights, npu.per_channel, npu.block_size)
    # LPBQ int4: the linears are scaled activation-aware first (K's smoothing is unaffected: AWQ scales input
    # channels and folds the inverse into norm gains and up's rows, which leaves q.k unchanged)
    awq = _awq_reader(source, npu, scheme)
    segments = Segments(arch, source.path, work, StaticShape(npu.chunk, graph_context), scheme, npu,
                        awq if awq is not None else SafetensorsReader(source.path), schedule(driver, windows, length))
    label = f"layers: fp32, calibrate, quantize {scheme.label}" + (" (awq)" if awq is not None else "")
    with bars(label, arch.num_layers + 1, "layer") as bar:  # the head (final norm, lm_head) is the last unit
        for i in range(arch.num_layers):
            segments.layer(i)
            bar.update(1)
        segments.head()
        bar.update(1)
    stitch(segments.done, work / GRAPH_FILE, [STATIC_IO.logits] + [n for i in range(arch.num_layers)
                                                                   for n in STATIC_IO.present_names(i)])
    share_external_data(work, [GRAPH_FILE])  # one weights.data from the segments' files
    for name in (GRAPH_FILE, "weights.data"):
        (work / name).rename(stage / name)
    shutil.rmtree(work)
    if npu.compile:
        static = _compile(stage, static, bars)
    kept = [p.layer for p in segments.precision if p.bits == 8]
    if kept:  # asked for 4 bits: say where it was not given
        import warnings

        warnings.warn(f"int4: {len(kept)} of {arch.num_layers} layers kept 8-bit, where 4 bits measured more than "
                      f"{npu.w4_max_cost} worse (--w4-max-cost; per-layer errors in the manifest)", stacklevel=2)
    quant = Quantization(mode="qdq", method=scheme.describe(segments.blocks), bits=scheme.weight_bits,
                         symmetric=npu.per_channel, block_size=scheme.block_size if scheme.lpbq else None,
                         calibration=None if awq is None else f"awq: {len(awq.windows)} windows x "
                         f"{len(awq.windows[0])} tokens, mean alpha {awq.mean_alpha:.3f}",
                         layers=tuple(segments.precision))
    return static, quant


def mask_value(arch) -> float:
    """What the mask adds to a hidden position: MASKED, and twice the cap below it where soft-capped scores
    (within +-cap) come before the mask, so a hidden one stays far under every visible one."""
    return MASKED - 2 * arch.softcaps.get("attention", 0.0)


def _awq_reader(source, npu: NpuConfig, scheme: QdqScheme):
    """The CPU int4 path's activation-aware scaling (edgelm.export.native.awq), for LPBQ weights; None when
    the weights are not LPBQ or --calibration none."""
    if not scheme.lpbq or npu.calibration == "none":
        return None
    if not source.arch.awq_supported:  # fused weights, or a forward the awq search does not model
        if npu.calibration == "awq":
            raise ExportError(f"--calibration awq is not built for {source.arch.name}; export with --calibration none")
        return None
    from edgelm.export.native.awq import awq_reader
    from edgelm.export.native.decoder import LinearFormat

    fmt = LinearFormat(4, scheme.block_size, symmetric=True)  # its search rounds in float-scaled blocks of this size
    return awq_reader(source, SafetensorsReader(source.path), fmt, npu.awq_samples)


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
    with bars("compile on QNN", 1, "graph") as bar:  # strict: a node the HTP rejects raises ProviderFallback
        session = create_session(stage / GRAPH_FILE, qnn, strict=True, context_cache=stage)
        nodes = partition_of(session, qnn.spec.ort_name).on_requested()
        bar.update(1)
    compiled = f"{Path(GRAPH_FILE).stem}.{qnn.spec.name}_ctx.onnx"
    return replace(static, context_models={"prefill": compiled, "decode": compiled},
                   compiled_nodes={"prefill": nodes, "decode": nodes})


def drop_qdq(stage: Path, manifest):
    """Remove the QDQ graphs and their weights from a package whose context models were compiled: the context
    binary holds the one copy of the weights the device needs. Returns the manifest to write."""
    from dataclasses import replace

    static = manifest.static
    for name in {static.prefill_file, static.decode_file, *_external_files(stage, static)}:
        (stage / name).unlink(missing_ok=True)
    return replace(manifest, model_file=static.context_models["decode"], static=replace(static, portable=False))


def _external_files(stage: Path, static) -> set[str]:
    import onnx

    names = set()
    for graph in {static.prefill_file, static.decode_file}:
        model = onnx.load(str(stage / graph), load_external_data=False)
        names |= {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return names
