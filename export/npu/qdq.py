"""QDQ quantization of the static graphs for the QNN HTP, from ranges measured once for both graphs.

onnxruntime's quantizer inserts QuantizeLinear/DequantizeLinear pairs (`get_qnn_qdq_config` makes the
choices QNN needs); our `TensorQuantOverrides` give every activation its shared range, so the calibration
the quantizer runs itself only needs one sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.errors import QuantizationError, first_line

_TYPES = {"uint8": "QUInt8", "uint16": "QUInt16", "int8": "QInt8", "int16": "QInt16", "int4": "QInt4",
          "uint4": "QUInt4"}


@dataclass(frozen=True)
class QdqScheme:
    activations: str = "uint16"
    weights: str = "int8"
    per_channel: bool = True  # linear weights: one scale per output channel (signed, symmetric), else one per tensor
    block_size: int = 32  # per-channel int4: LPBQ blocks of this many input rows (edgelm.export.npu.lpbq)

    @property
    def lpbq(self) -> bool:
        """int4 per-channel weights are written as LPBQ blocks: per-channel int4 alone loses too much."""
        return self.per_channel and self.weight_bits == 4

    @property
    def quantizer_weights(self) -> str:
        """The weight type onnxruntime's quantizer writes (LPBQ rewrites its int8 per-channel weights)."""
        return "int8" if self.lpbq else self.weights

    @property
    def weight_bits(self) -> int:
        return int("".join(c for c in self.weights if c.isdigit()))

    @property
    def label(self) -> str:  # e.g. a16w8
        return f"a{''.join(c for c in self.activations if c.isdigit())}w{self.weight_bits}"

    def describe(self, blocks: dict[str, int] | None = None) -> str:
        """`blocks`: weight -> LPBQ block used (0: kept 8-bit), as apply_lpbq returns it."""
        if self.lpbq:
            other = Counter(b for b in (blocks or {}).values() if b != self.block_size)
            exceptions = "; ".join(f"{n} weights {'8-bit per channel' if b == 0 else f'in blocks of {b}'}"
                                   for b, n in sorted(other.items()))
            return (f"QDQ {self.label}, LPBQ linear weights (int4 blocks of {self.block_size} input rows, 4-bit "
                    f"block scales times a per-channel float{'; ' + exceptions if exceptions else ''})")
        return f"QDQ {self.label}, {'per-channel' if self.per_channel else 'per-tensor'} linear weights"


def weight_overrides(path: Path, scheme: QdqScheme) -> dict:
    """Per-channel overrides for every MatMul weight (K, N): axis 1, signed and symmetric, as QNN requires.
    (onnxruntime's QNN config would make MatMul weights per-tensor; the HTP takes per-channel ones.)"""
    import onnx

    if not scheme.per_channel:
        return {}
    if not scheme.weights.startswith("int"):
        raise QuantizationError(f"per-channel weights must be signed (int8 or int4), not {scheme.weights}")
    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    qtype = quant_type(scheme.quantizer_weights)
    return {node.input[1]: [{"axis": 1, "quant_type": qtype, "symmetric": True}]
            for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants}


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
        overrides = {**overrides, **weight_overrides(fp32, scheme)}
        # tensors other than the linears' weights (norm scales, the embedding table) stay per-tensor 8-bit
        config = get_qnn_qdq_config(str(fp32), OneSample(), activation_type=quant_type(scheme.activations),
                                    weight_type=quant_type(scheme.weights if not scheme.per_channel else "uint8"),
                                    init_overrides=overrides)
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
