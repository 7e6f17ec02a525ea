"""QDQ quantization of the static graphs for the QNN HTP, from ranges measured once for both graphs.

onnxruntime's quantizer inserts QuantizeLinear/DequantizeLinear pairs (`get_qnn_qdq_config` makes the
choices QNN needs); our `TensorQuantOverrides` give every activation its shared range, so the calibration
the quantizer runs itself only needs one sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.errors import QuantizationError, first_line

_TYPES = {"uint8": "QUInt8", "uint16": "QUInt16", "int8": "QInt8", "int16": "QInt16", "int4": "QInt4",
          "uint4": "QUInt4"}


@dataclass(frozen=True)
class QdqScheme:
    activations: str = "uint16"
    weights: str = "uint8"

    @property
    def label(self) -> str:  # a16w8
        return f"a{''.join(c for c in self.activations if c.isdigit())}w{''.join(c for c in self.weights if c.isdigit())}"


def quant_type(name: str):
    from onnxruntime.quantization import QuantType

    if name not in _TYPES:
        raise QuantizationError(f"unknown QDQ type {name!r}; choose one of: {', '.join(_TYPES)}")
    return getattr(QuantType, _TYPES[name])


def producers(path: Path) -> dict[str, str]:
    """Tensor name -> op type of the node that makes it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {out: node.op_type for node in model.graph.node for out in node.output}


def quantize_graph(fp32: Path, out: Path, sample: dict[str, np.ndarray], overrides: dict, scheme: QdqScheme) -> Path:
    """Write the QDQ version of `fp32` to `out` (+ `out`.data)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    class OneSample(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([sample])

        def get_next(self):
            return next(self.feeds, None)

    import logging

    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # the quantizer logs advice to the root logger; keep it quiet
    try:
        config = get_qnn_qdq_config(str(fp32), OneSample(), activation_type=quant_type(scheme.activations),
                                    weight_type=quant_type(scheme.weights), init_overrides=overrides)
        config.use_external_data_format = True
        quantize(str(fp32), str(out), config)
    except QuantizationError:
        raise
    except Exception as exc:  # onnxruntime's quantizer raises plain exceptions
        raise QuantizationError(f"QDQ quantization of {fp32.name} failed: {first_line(exc)}") from None
    finally:
        root.level = level
    for path in (out, out.with_name(f"{out.name}.data")):
        if path.exists():
            path.chmod(0o644)  # the quantizer writes through a private temp file
    return out
