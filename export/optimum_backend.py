"""The optimum-onnx backend: HF folder -> one ONNX decoder with past KV inputs (task text-generation-with-past).

It runs the model through `torch.onnx` tracing, so it works for anything optimum supports, at the price of
a large graph of plain ops. Its I/O naming is fixed (below) and checked after export.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from edgelm.errors import ExportError
from edgelm.export.source import ModelSource
from edgelm.manifest import GraphIO

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


def export_onnx(source: ModelSource, workdir: Path) -> tuple[Path, GraphIO]:
    """Export `source` to `workdir/model.onnx`; return the path and the graph's I/O names."""
    from optimum.exporters.onnx import main_export

    optimum_log = logging.getLogger("optimum")
    level = optimum_log.level
    optimum_log.setLevel(logging.ERROR)  # e.g. a warning per tied weight; our own checks follow
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
    finally:
        optimum_log.setLevel(level)
    path = workdir / "model.onnx"
    if not path.is_file():
        raise ExportError(f"optimum produced no model.onnx in {workdir}")
    check_io(path, OPTIMUM_IO, source.arch.num_layers)
    return path, OPTIMUM_IO


def check_io(path: Path, io_names: GraphIO, num_layers: int) -> None:
    """Fail loudly if the graph's I/O does not match what the manifest will promise."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    want_in = {io_names.input_ids, io_names.attention_mask, io_names.position_ids}
    want_out = {io_names.logits}
    for layer in range(num_layers):
        want_in.update(io_names.past_names(layer))
        want_out.update(io_names.present_names(layer))
    want_in.discard(None)
    missing = sorted((want_in - inputs) | (want_out - outputs))
    if missing:
        raise ExportError(f"exported graph lacks expected inputs/outputs: {', '.join(missing[:6])}")
