"""Constant bytes of an ONNX graph, and the bytes one decode step reads from them: every initializer, less tables
read only by Gather (a step reads one row). Counted from the tensors' headers, so a graph loaded without its
external data (a peer's, in the bench) counts the same as one in memory (edgelm's, at export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.manifest import WeightStats

GATHERS = {"Gather", "GatherBlockQuantized"}


def _bytes(tensor) -> int:
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.raw_data:
        return len(tensor.raw_data)
    from onnx import helper

    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def weight_stats(graph) -> WeightStats:
    """Total constant bytes of `graph` (an onnx GraphProto) and the bytes one decode step reads."""
    sizes = {t.name: _bytes(t) for t in graph.initializer}
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name in sizes:
                consumers.setdefault(name, set()).add(node.op_type)
    gather_only = {n for n, ops in consumers.items() if ops <= GATHERS}
    total = sum(sizes.values())
    return WeightStats(total=total, per_token=total - sum(sizes[n] for n in gather_only))


def per_token_bytes(graph_path: str | Path) -> int | None:
    """Bytes a decode step reads from the graph file's constants (external data never loaded); None without onnx."""
    try:
        import onnx
    except ImportError:
        return None
    return weight_stats(onnx.load(str(graph_path), load_external_data=False).graph).per_token
