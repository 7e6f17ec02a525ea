"""Activation ranges for static quantization of the NPU graph (driven by edgelm.export.npu.layerwise).

Every float tensor of a segment is recorded (min, max) by name over all calibration runs (the tensors of
padded rows count too: the device computes them with the same ranges). Ranges are then widened by
`widen` (16 calibration tokens clip attention scores otherwise), except tensors whose range is known
exactly: the mask, cos/sin, and [0, 1] outputs (Softmax, Sigmoid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.export.npu.graph import COS, MASK, SIN

EXACT_OPS = ("Softmax", "Sigmoid")  # outputs always in [0, 1]
EXACT_INPUTS = (COS, SIN, MASK)


class RangeRecorder:
    """Wraps an fp32 session whose graph outputs every float tensor; records their (min, max)."""

    def __init__(self, session, ranges: dict[str, list[float]], channel_max: dict[str, np.ndarray],
                 channel_suffixes: tuple[str, ...]):
        self.session, self.ranges = session, ranges
        self.channel_max, self.channel_suffixes = channel_max, channel_suffixes
        self.names = [o.name for o in session.get_outputs()]
        self.first_feeds: dict | None = None  # one real input, for the quantizer's own calibration pass

    def run(self, outputs, feeds):
        if self.first_feeds is None:
            self.first_feeds = {k: v.copy() for k, v in feeds.items()}
        for name, value in feeds.items():
            if value.dtype == np.float32:
                self._add(name, value)
        values = self.session.run(self.names, feeds)
        for name, value in zip(self.names, values):
            if value.dtype == np.float32:
                self._add(name, value)
            if name.endswith(self.channel_suffixes):  # (1, heads, N, hd) -> max |x| per (head, channel)
                m = np.abs(value).max(axis=(0, 2))
                old = self.channel_max.get(name)
                self.channel_max[name] = m if old is None else np.maximum(old, m)
        by_name = dict(zip(self.names, values))
        return [by_name[n] for n in outputs]

    def _add(self, name: str, value: np.ndarray) -> None:
        lo, hi = float(value.min()), float(value.max())
        old = self.ranges.get(name)
        self.ranges[name] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]


def with_all_outputs(path: Path, out: Path) -> Path:
    """A copy of the graph at `path` whose outputs include every float node output (weights stay external)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(model)
    known = {o.name for o in model.graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known and types.get(name) == TensorProto.FLOAT:
                model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                known.add(name)
    onnx.save_model(model, str(out))  # external data keeps pointing at the original .data (same folder)
    return out


def range_overrides(ranges: dict[str, list[float]], producers: dict[str, str], widen: float,
                    keep: tuple[str, ...] = ()) -> dict:
    """TensorQuantOverrides for onnxruntime's quantizer: every activation gets its shared range, widened
    unless it is exact or its name ends with one of `keep`."""
    overrides = {}
    for name, (lo, hi) in ranges.items():
        if name not in EXACT_INPUTS and producers.get(name) not in EXACT_OPS and not name.endswith(keep):
            lo, hi = lo * widen if lo < 0 else lo, hi * widen if hi > 0 else hi
        overrides[name] = [{"rmin": np.float32(min(lo, 0.0)), "rmax": np.float32(max(hi, 0.0))}]
    return overrides
