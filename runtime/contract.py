"""The manifest against the graph it describes, checked once a session is open: a manifest whose io names,
layer count or cache dtype do not fit the graph is a PackageError naming the field, not an onnxruntime
traceback at the first token.

    inputs    every name the decoder feeds is a graph input; every graph input is fed (dynamic graphs)
    outputs   logits and every layer's present key/value are graph outputs
    KV        each past input's element type is kv_cache.dtype (static graphs: float32, what their cache
              holds), and its kv_heads / head_dim dimensions, where the graph fixes them, are the manifest's
"""

from __future__ import annotations

from edgelm.errors import PackageError
from edgelm.manifest import Manifest

ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}  # kv_cache.dtype -> onnxruntime's name


def fed_inputs(m: Manifest) -> list[str]:
    """The inputs a dynamic-shape decoder feeds (edgelm.runtime.decoder), past keys/values included."""
    io = m.io
    optional = (io.attention_mask, io.position_ids, io.logits_to_keep, io.seqlens_k, io.total_sequence_length,
                io.logits_start)
    return [io.input_ids, *(n for n in optional if n), *past_names(m)]


def past_names(m: Manifest) -> list[str]:
    return [name for layer in range(m.kv_cache.num_layers) for name in m.io.past_names(layer)]


def present_names(m: Manifest) -> list[str]:
    return [name for layer in range(m.kv_cache.num_layers) for name in m.io.present_names(layer)]


def check_graph(m: Manifest, session, file: str) -> None:
    """PackageError naming the first place where `session`'s graph (loaded from `file`) and manifest `m` differ."""
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name for arg in session.get_outputs()}
    static = m.static is not None

    def mismatch(what: str) -> PackageError:
        return PackageError(f"the manifest does not describe {file}: {what}; re-export the package")

    expected = past_names(m) if static else fed_inputs(m)
    for name in expected:
        if name not in inputs:
            raise mismatch(f"it names input {name!r}, which the graph does not have "
                           f"(kv_cache.num_layers = {m.kv_cache.num_layers}; the graph's inputs: {_few(inputs)})")
    if not static:
        unfed = [name for name in inputs if name not in set(expected)]
        if unfed:
            raise mismatch(f"the graph's input {unfed[0]!r} is not named by the manifest's io or KV layout "
                           f"(kv_cache.num_layers = {m.kv_cache.num_layers})")
    for name in [m.io.logits, *present_names(m)]:
        if name not in outputs:
            raise mismatch(f"it names output {name!r}, which the graph does not have (its outputs: {_few(outputs)})")
    dtype = "float32" if static else m.kv_cache.dtype
    want = {1: ("kv_cache.num_kv_heads", m.kv_cache.num_kv_heads), 3: ("kv_cache.head_dim", m.kv_cache.head_dim)}
    for name in past_names(m):
        arg = inputs[name]
        if arg.type != ORT_TYPES[dtype]:
            raise mismatch(f"input {name!r} is {arg.type}, but kv_cache.dtype is {m.kv_cache.dtype}")
        shape = list(arg.shape or [])
        for axis, (field, value) in want.items():
            if len(shape) == 4 and isinstance(shape[axis], int) and shape[axis] != value:
                raise mismatch(f"input {name!r} has {shape[axis]} on axis {axis}, but {field} is {value}")


def _few(names, limit: int = 6) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
