"""The optimum-onnx backend: HF folder -> one ONNX decoder with past KV inputs (task text-generation-with-past).

It runs the model through `torch.onnx` tracing, so it works for anything optimum supports, at the price of
a large graph of plain ops. Its I/O naming is fixed (below) and checked after export.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import replace
from pathlib import Path

from edgelm.errors import ExportError, UnsupportedArchitecture, first_line
from edgelm.export.source import ModelSource
from edgelm.manifest import GraphIO, KVCache

# The names optimum gives the decoder's inputs and outputs.
OPTIMUM_IO = GraphIO(
    input_ids="input_ids",
    attention_mask="attention_mask",
    position_ids="position_ids",
    logits="logits",
    past_key="past_key_values.{layer}.key",
    past_value="past_key_values.{layer}.value",
    present_key="present.{layer}.key",
    present_value="present.{layer}.value",
)


def export_onnx(source: ModelSource, workdir: Path) -> tuple[Path, GraphIO, KVCache]:
    """Export `source` to `workdir/model.onnx`; return the path, the graph's I/O names and its KV-cache layout
    (read from the graph, so architectures without a spec get the right one)."""
    from optimum.exporters.onnx import main_export

    from transformers.utils import logging as hf_logging

    optimum_log = logging.getLogger("optimum")
    level, hf_level = optimum_log.level, hf_logging.get_verbosity()
    optimum_log.setLevel(logging.ERROR)  # e.g. a warning per tied weight; our own checks follow
    hf_logging.set_verbosity_error()  # e.g. transformers' "`torch_dtype` is deprecated" from optimum's loader
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            main_export(
                str(source.path),
                workdir,
                task=source.arch.optimum_task,
                do_validation=False,
                local_files_only=True,
            )
    except Exception as exc:  # optimum's own errors are untyped (ValueError, KeyError, ...): one line, typed
        detail = f"{type(exc).__name__}: {first_line(exc, 200)}"
        if not source.arch.native:
            from edgelm.export.arch import registered_architectures

            raise UnsupportedArchitecture(source.arch.name, registered_architectures(), detail) from None
        raise ExportError(f"optimum could not export {source.arch.name}: {detail}; nothing was written") from None
    finally:
        optimum_log.setLevel(level)
        hf_logging.set_verbosity(hf_level)
    path = workdir / "model.onnx"
    if not path.is_file():
        raise ExportError(f"optimum produced no model.onnx in {workdir}")
    return (path, *graph_io(path, OPTIMUM_IO))


def graph_io(path: Path, io_names: GraphIO) -> tuple[GraphIO, KVCache]:
    """The I/O names the graph really has (position_ids only if it is an input) and its KV-cache layout
    (layers = past key inputs; kv heads and head_dim from their static dims); fail loudly on a mismatch."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    if io_names.position_ids not in inputs:
        io_names = replace(io_names, position_ids=None)
    layers = 0
    while io_names.past_names(layers)[0] in inputs:
        layers += 1
    want_in = {io_names.input_ids, io_names.attention_mask}
    want_out = {io_names.logits}
    for layer in range(layers):
        want_in.update(io_names.past_names(layer))
        want_out.update(io_names.present_names(layer))
    missing = sorted((want_in - set(inputs)) | (want_out - outputs))
    if missing or not layers:
        raise ExportError(f"exported graph lacks expected inputs/outputs: {', '.join(missing[:6]) or 'past key values'}")
    past = inputs[io_names.past_names(0)[0]].type.tensor_type
    dims = [d.dim_value for d in past.shape.dim]  # (batch, kv_heads, past_sequence, head_dim); 0 = symbolic
    if len(dims) != 4 or not dims[1] or not dims[3]:
        raise ExportError(f"past key input has shape {dims}; edgelm expects (batch, kv_heads, seq, head_dim)")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(past.elem_type).name
    return io_names, KVCache(layers, dims[1], dims[3], dtype)
