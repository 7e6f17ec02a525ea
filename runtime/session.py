"""Create an onnxruntime InferenceSession for a package graph on one execution provider."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from edgelm.errors import PackageError, UsageError, first_line
from edgelm.runtime.partition import ProviderFallback, partition_of
from edgelm.runtime.providers import ProviderSpec, Resolved

_EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


@contextlib.contextmanager
def native_console_quiet():
    """Keep what native plugin code writes to the console (QNN's "# LIBNATIVE ..." banner on stdout, Dawn's
    "Warning: maxDynamic... reduced" on stderr) out of the terminal: stdout stays ours. Both go to /dev/null,
    or with EDGELM_VERBOSE=1 (--verbose) to stderr. Failures still reach the caller as exceptions."""
    sys.stdout.flush()
    sys.stderr.flush()
    verbose = bool(os.environ.get("EDGELM_VERBOSE"))
    saved = os.dup(1), os.dup(2)
    sink = 2 if verbose else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 1)
        if not verbose:
            os.dup2(sink, 2)
        yield
    finally:
        _flush_c_stdio()  # native printf output is buffered: flush it while the descriptors point to the sink
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if sink != 2:
            os.close(sink)


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


MAX_THREADS = 1024  # onnxruntime starts every one of them: 10**5 threads exhaust memory


def check_threads(threads) -> None:
    """UsageError unless `threads` is None, 0 (one per physical core) or 1..MAX_THREADS."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or
                                not 0 <= threads <= MAX_THREADS):
        raise UsageError(f"threads must be an integer from 1 to {MAX_THREADS} (or 0/None: one per physical core), "
                         f"not {threads!r}")


def session_options(spec: ProviderSpec, threads: int | None = None, strict: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 4  # fatal only: failures reach the caller as typed errors instead
    check_threads(threads)
    if threads:
        opts.intra_op_num_threads = int(threads)  # 0 (default) = one per physical core
    for key, value in spec.session_options.items():
        if key == "execution_mode":
            value = getattr(ort.ExecutionMode, _EXECUTION_MODES[value])
        setattr(opts, key, value)
    for key, value in spec.session_config.items():
        opts.add_session_config_entry(key, value)
    opts.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if strict and spec.name != "cpu":
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return opts


def create_session(
    model_path: Path,
    provider: Resolved,
    threads: int | None = None,
    strict: bool = False,
    provider_options: dict[str, str] | None = None,
    context_cache: Path | None = None,
):
    """A session on `provider`; with `strict`, ProviderFallback names any node it would leave to the CPU.

    `context_cache`: a folder for the provider's compiled EP-context model (providers that have one, e.g.
    QNN). The first load compiles and writes it; later loads start from it.
    """
    spec = provider.spec
    options = {**spec.provider_options, **(provider_options or {})}
    config: dict[str, str] = {}
    if context_cache is not None and spec.context_cache:
        cached = Path(context_cache) / f"{Path(model_path).stem}.{spec.name}_ctx.onnx"
        if cached.is_file():
            model_path = cached
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            config = {**spec.context_cache, "ep.context_file_path": str(cached)}
    try:
        return _open(model_path, provider, threads, strict, options, config)
    except ProviderFallback:
        raise
    except Exception as exc:  # onnxruntime raises its own untyped errors
        if strict and spec.name != "cpu":
            # Find out which nodes the provider refuses: partition without the strict flag, then name them.
            try:
                loose = _open(model_path, provider, threads, False, {**options, **spec.strict_partition}, {})
                report = partition_of(loose, spec.ort_name)
            except Exception:
                report = None
            if report is not None and report.fallback:
                raise ProviderFallback(report) from None
        first = first_line(exc) or type(exc).__name__
        raise PackageError(f"onnxruntime cannot load {model_path} on {spec.name}: {first}") from None


def _open(model_path: Path, provider: Resolved, threads, strict: bool, options: dict, config: dict):
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # plugin EPs log through the default logger
    spec = provider.spec
    opts = session_options(spec, threads, strict)
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    if spec.is_plugin:
        opts.add_provider_for_devices(provider.devices, options)
        with native_console_quiet():  # some plugin libraries print banners on stdout
            session = ort.InferenceSession(str(model_path), sess_options=opts)
    else:
        providers = [(spec.ort_name, options)]
        if spec.name != "cpu":
            providers.append(("CPUExecutionProvider", {}))
        session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    if strict and spec.name != "cpu":
        report = partition_of(session, spec.ort_name)
        if report.fallback:
            raise ProviderFallback(report)
    return session
