"""Facts about the machine and the process: CPU, OS, versions, resident memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
from functools import lru_cache

from edgelm.versions import package_versions


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*names: str) -> dict[str, str]:
    return {"python": platform.python_version(), **package_versions(*names)}


def physical_cores() -> int:
    """What onnxruntime uses when no thread count is given (one intra-op thread per physical core)."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def system_info() -> dict[str, str | int]:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the edgelm checkout this code runs from, if it is one."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (never system-wide).

    Linux: VmHWM of /proc/self/status, the high-water mark of this process image. ru_maxrss is not used
    there because it survives execve: a process started from a big parent inherits the parent's peak.
    Elsewhere: ru_maxrss.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def current_rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def read_bandwidth(threads: int, mib: int = 1024, reps: int = 5) -> float:
    """GB/s of this machine's memory reads with `threads` threads, through onnxruntime's own kernels: a ReduceMax
    over every row of a `mib` MiB float32 buffer (rows split among the intra-op threads), best of `reps` runs
    after one warm-up. A decode step is mostly a read of the weights: this is the roofline it is held against."""
    import time

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rows = 4096
    cols = mib * (1 << 20) // 4 // rows
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph([node], "read", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, cols])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.full((rows, cols), 1.0, dtype=np.float32)  # written once: every page resident before the timing
    feed = {"x": ort.OrtValue.ortvalue_from_numpy(x)}  # the buffer itself: no copy per run
    best = float("inf")
    for i in range(reps + 1):
        start = time.perf_counter()
        session.run_with_ort_values(["y"], feed)
        if i:
            best = min(best, time.perf_counter() - start)
    return x.nbytes / best / 1e9
