"""MLP activations by their transformers `hidden_act` name: the ONNX node(s) each builder emits and a numpy
twin for the calibration forward. Data; a name missing here is declined by the config contract.

    fused graph (native builder)      static graph (NPU, plain ops)        numpy (awq calibration)
    silu: QuickGelu(alpha=1)          x * Sigmoid(x)                       x / (1 + exp(-x))
    gelu (erf): Gelu                  0.5 x (1 + Erf(x / sqrt 2))          same, erf from math
    gelu tanh: FastGelu               0.5 x (1 + Tanh(c (x + 0.044715 x^3)))  same
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

_ERF = np.vectorize(math.erf, otypes=[np.float64])
_TANH_C = math.sqrt(2.0 / math.pi)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))).astype(x.dtype)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.float32(_TANH_C) * (x + np.float32(0.044715) * x * x * x)))


@dataclass(frozen=True)
class Activation:
    fused_op: str  # a com.microsoft contrib op of one input
    fused_attrs: dict = field(default_factory=dict)
    plain: str = "silu"  # which plain-op form the static builder draws: silu | gelu | gelu_tanh
    numpy: Callable[[np.ndarray], np.ndarray] = _silu


_SILU = Activation("QuickGelu", {"alpha": 1.0}, "silu", _silu)  # QuickGelu(x) = x * sigmoid(alpha x)
_GELU_TANH = Activation("FastGelu", {}, "gelu_tanh", _gelu_tanh)
ACTIVATIONS: dict[str, Activation] = {
    "silu": _SILU,
    "swish": _SILU,
    "gelu": Activation("Gelu", {}, "gelu", _gelu),
    "gelu_pytorch_tanh": _GELU_TANH,
    "gelu_new": _GELU_TANH,
    "gelu_fast": _GELU_TANH,
}
