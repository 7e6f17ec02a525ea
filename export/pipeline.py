"""The export pipeline: source -> ONNX graph -> quantization -> package, each stage announced (edgelm.progress).

    HF folder ─┐
    .gguf ─────┼─> open_source ──> backend (optimum) ──> quantize ──> package folder
    preset ────┘                    (work dir inside the stage)       (staged, renamed into place)
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path

from edgelm.errors import ExportError, ModelSourceError
from edgelm.paths import path_problem
from edgelm.export import optimum_backend
from edgelm.export.package import copy_support_files, save_onnx, weight_stats, write_manifest
from edgelm.export.config import ExportConfig
from edgelm.export.quantize import QuantMode, get_mode
from edgelm.export.source import open_source
from edgelm.export.native.weights import SafetensorsReader
from edgelm.export.staging import check_output, staged_output, temporary_folder
from edgelm.manifest import Manifest, file_entries
from edgelm.progress import as_progress

BACKENDS = ("auto", "native", "optimum")
# cpu: one dynamic-shape graph (any provider; GPU EPs run its int64 shape arithmetic on the CPU) | gpu: the
# native graph with no int64 arithmetic, lengths from the host (every node on a GPU EP; runs on the CPU
# too) | npu-qnn: one static QDQ graph for the Qualcomm HTP
TARGETS = ("cpu", "gpu", "npu-qnn")


def export_model(model: str | Path, out: str | Path, config: ExportConfig = ExportConfig()) -> Manifest:
    """Export an HF model folder (or a .gguf file) to an edgelm package at `out`."""
    model, out = Path(model), Path(out)
    if problem := path_problem(model, "file" if model.suffix == ".gguf" else "folder"):
        what = "GGUF file" if model.suffix == ".gguf" else "model folder"
        raise ModelSourceError(f"{what} {model} {problem}; pass a Hugging Face model folder or a .gguf file")
    _check(config, out, protected=(model,))
    if model.suffix == ".gguf":
        from edgelm.export.gguf import gguf_to_hf

        with temporary_folder("edgelm-gguf-") as hf_dir:
            gguf_to_hf(model, hf_dir, as_progress(config.progress))
            return _export_folder(hf_dir, out, config, label=model.name)
    return _export_folder(model, out, config, label=model.name)


def export_synthetic(preset: str, out: str | Path, config: ExportConfig = ExportConfig(), seed: int = 0) -> Manifest:
    """Build synthetic preset `preset` (seeded random weights, offline tokenizer) and export it."""
    from edgelm.export.synthetic import build_synthetic, get_preset

    get_preset(preset)
    out = Path(out)
    _check(config, out)
    with temporary_folder("edgelm-synthetic-") as hf_dir:
        with as_progress(config.progress).stage(f"build {preset} with random weights (seed {seed})"):
            build_synthetic(preset, hf_dir, seed=seed)
        return _export_folder(hf_dir, out, config, label=f"synthetic:{preset}:seed{seed}")


def _check(config: ExportConfig, out: Path, protected: tuple[Path, ...] = ()) -> None:
    """Every cheap check, before any expensive work."""
    check_config(config)
    check_output(out.absolute(), config.force, protected)


def check_config(config: ExportConfig) -> None:
    """ExportError for any value of `config` outside what the export takes (target, mode and its knobs, backend,
    NPU knobs, --min-agreement), without touching a file."""
    if config.target not in TARGETS:
        raise ExportError(f"unknown target {config.target!r}; choose one of: {', '.join(TARGETS)}")
    if config.target == "npu-qnn":
        from edgelm.export.npu.pipeline import check_npu_config

        check_npu_config(config.npu)
    else:
        get_mode(config.quant, config.quant_config)
    if config.backend not in BACKENDS:
        raise ExportError(f"unknown backend {config.backend!r}; choose one of: {', '.join(BACKENDS)}")
    if config.min_agreement is not None and not 0.0 <= config.min_agreement <= 1.0:
        raise ExportError(f"--min-agreement is a fraction of positions, 0 to 1; got {config.min_agreement}")
    if config.min_agreement is not None and not config.check:
        raise ExportError("--min-agreement needs the self-check; drop --no-check")
    if config.kld and not config.check:
        raise ExportError("--kld is scored by the self-check; drop --no-check")
    if config.kld and config.target == "npu-qnn":  # its static graphs' context and chunking are not scored so
        raise ExportError("--kld is built for --target cpu and gpu packages; an npu-qnn package's self-check "
                          "records its agreement on the device instead (edgelm info)")


# ArchSpec builder switches the static NPU graph does not implement yet: switch -> what it is (every switch the
# families have is built now; a new one goes here until the static graph builds it)
NPU_UNBUILT: dict[str, str] = {}


class BackendFallback(UserWarning):
    """`--backend auto` exports with optimum because the native builder declined the model (the reason)."""


def native_declines(source, mode: QuantMode) -> list[str]:
    """Why the native builder cannot build `source` at `mode` exactly; empty when it can. The config contract
    (`ArchSpec.declined`), then the checkpoint: a tensor the spec would not read means a model it does not know."""
    arch = source.arch
    reasons = [str(d) for d in arch.declined()]
    if not reasons:
        unexpected = arch.unexpected_tensors(SafetensorsReader(source.path).entries)
        if unexpected:
            more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
            reasons.append(f"tensor(s) {', '.join(unexpected[:3])}{more} would not be read by the {arch.name} spec")
    if not mode.native:
        reasons.append(f"{mode.name} precision is not built natively")
    return reasons


def choose_backend(requested: str, source, mode: QuantMode) -> tuple[str, str | None]:
    """(backend, why not native). auto: the native builder where it builds the model exactly, else optimum
    (with a BackendFallback warning); native: an ExportError naming what it declines."""
    declined = native_declines(source, mode) if requested != "optimum" else []
    if requested == "native" and declined:
        raise ExportError(f"the native builder declines {source.arch.name}: {'; '.join(declined)}; "
                          "use --backend auto or optimum")
    chosen = ("optimum" if declined else "native") if requested == "auto" else requested
    reason = "; ".join(declined) if declined else None
    if chosen == "optimum" and not mode.optimum:
        why = f": the native builder declines this model ({reason})" if reason else ""
        raise ExportError(f"{mode.name} is built by the native builder only{why}; choose another --quant")
    if chosen == "optimum" and mode.config.calibration not in ("auto", "none") and mode.native_bits is not None:
        c = mode.config.calibration
        raise ExportError(f"--calibration {c} is done by the native builder, and this export takes the optimum "
                          f"backend (asked for, or needed by the architecture or precision); drop --calibration {c}")
    if requested == "auto" and reason and source.arch.native:  # a spec'd architecture whose config is declined
        warnings.warn(BackendFallback(f"the native builder declines {source.arch.name} ({reason}); exporting with "
                                      "optimum"), stacklevel=3)
    return chosen, reason


def _export_folder(model: Path, out: Path, config: ExportConfig, label: str) -> Manifest:
    with as_progress(config.progress).stage("read the model folder: config, tokenizer, weights index"):
        source = open_source(model)
    if config.target == "npu-qnn":
        return _export_npu(source, out, config, label)
    mode: QuantMode = get_mode(config.quant, config.quant_config)
    if config.target == "gpu":  # the GPU graph form is the native builder's
        declined = native_declines(source, mode)
        if declined or config.backend == "optimum":
            why = "; ".join(declined) if declined else "--backend optimum was asked for"
            raise ExportError(f"--target gpu is built by the native builder, which cannot build this export: {why}")
        return _export_native(source, out, config, mode, label)
    backend, reason = choose_backend(config.backend, source, mode)
    if backend == "native":
        return _export_native(source, out, config, mode, label)
    label_source = {"backend_reason": reason} if reason else {}
    progress = as_progress(config.progress)
    with staged_output(out, config.force) as stage:
        import onnx

        work = stage / ".work"  # inside the stage, so a failure removes both
        work.mkdir()
        with progress.stage("export ONNX with optimum (torch.onnx trace)"):
            raw_path, io_names, kv = optimum_backend.export_onnx(source, work)
        with progress.stage(f"quantize {mode.name}"):
            graph = mode.apply(onnx.load(str(raw_path)))
        with progress.stage("write package"):
            weights = weight_stats(graph)
            save_onnx(graph, stage)
            del graph
            copy_support_files(source, stage)
            shutil.rmtree(work)  # gone before the manifest hashes the folder
            manifest = write_manifest(stage, source, io_names, mode.describe(), "optimum", label, weights, kv=kv,
                                      extra_source=label_source)
        return _checked(stage, source, manifest, config)


def _export_native(source, out: Path, config: ExportConfig, mode: QuantMode, label: str) -> Manifest:
    from edgelm.export.native.decoder import GPU_IO, NATIVE_IO, export_native

    io = GPU_IO if config.target == "gpu" else NATIVE_IO
    with staged_output(out, config.force) as stage:
        progress = as_progress(config.progress)
        _, io_names, weights, quant = export_native(source, stage, mode, progress, io)
        with progress.stage("write package"):
            copy_support_files(source, stage)
            manifest = write_manifest(stage, source, io_names, quant, "native", label, weights, kv_mode="shared",
                                      kv_dtype=mode.native_float, target=config.target)
        return _checked(stage, source, manifest, config)


def _export_npu(source, out: Path, config: ExportConfig, label: str) -> Manifest:
    from edgelm.export.npu.graph import STATIC_IO
    from edgelm.export.npu.pipeline import drop_qdq, export_npu_qnn

    features = [f"{name} ({why})" for name, why in NPU_UNBUILT.items() if getattr(source.arch, name)]
    if features:
        raise ExportError(f"--target npu-qnn does not build {', '.join(features)} yet, which {source.arch.name} has; "
                          "export it for --target cpu or gpu")
    declined = native_declines(source, get_mode("fp32"))
    if declined:
        raise ExportError(f"--target npu-qnn is built by the native builder, which declines {source.arch.name}: "
                          f"{'; '.join(declined)}")
    with staged_output(out, config.force) as stage:
        static, quant = export_npu_qnn(source, stage, config.npu, as_progress(config.progress))
        copy_support_files(source, stage)
        manifest = write_manifest(stage, source, STATIC_IO, quant, "native", label, kv_mode="static",
                                  target=config.target, static=static)
        manifest = _checked(stage, source, manifest, config)
        if static.context_models and not config.npu.keep_qdq:  # checked on the CPU above, then dropped
            manifest = drop_qdq(stage, manifest)
            manifest = replace(manifest, files=file_entries(stage))
            manifest.write(stage)
        return manifest


def _checked(stage: Path, source, manifest: Manifest, config: ExportConfig) -> Manifest:
    """The self-check (edgelm.export.check) unless switched off; it may fail the export before the rename."""
    if not config.check:
        return manifest
    from edgelm.export.check import self_check

    progress = as_progress(config.progress)
    manifest = self_check(stage, source, manifest, config.min_agreement, progress)
    if config.kld:
        from edgelm.export.check import llama_kld

        manifest = llama_kld(stage, source, manifest, progress)
    return manifest
