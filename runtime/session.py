"""Create an onnxruntime InferenceSession for a package graph on one execution provider."""

from __future__ import annotations

from pathlib import Path

from edgelm.errors import PackageError
from edgelm.runtime.providers import ProviderSpec

_EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


def session_options(spec: ProviderSpec, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only; edgelm reports what matters itself
    if threads:
        opts.intra_op_num_threads = int(threads)  # 0 (default) = one per physical core
    for key, value in spec.session_options.items():
        if key == "execution_mode":
            value = getattr(ort.ExecutionMode, _EXECUTION_MODES[value])
        setattr(opts, key, value)
    return opts


def create_session(model_path: Path, spec: ProviderSpec, threads: int | None = None):
    import onnxruntime as ort

    opts = session_options(spec, threads)
    providers = [(spec.ort_name, dict(spec.provider_options))]
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PackageError(f"onnxruntime cannot load {model_path} on {spec.name}: {first[:300]}") from None
