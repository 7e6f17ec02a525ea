"""Quantization modes, one registered class each: fp32, fp16, int8 and int4 (weight-only MatMulNBits).

Each mode transforms an ONNX ModelProto and describes itself for the manifest. Defaults live in
`edgelm.export.config` and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Callable, ClassVar

from edgelm.errors import QuantizationError
from edgelm.export.config import QuantConfig
from edgelm.manifest import Quantization

_MODES: dict[str, type[QuantMode]] = {}


def register(name: str) -> Callable[[type[QuantMode]], type[QuantMode]]:
    def wrap(cls: type[QuantMode]) -> type[QuantMode]:
        cls.name = name
        _MODES[name] = cls
        return cls

    return wrap


def quant_modes() -> list[str]:
    return list(_MODES)


# How int4/int8 weights are prepared before rounding (QuantConfig.calibration). auto: awq for int4 from the
# native builder (where it pays most: 16 levels per block), plain rounding otherwise.
CALIBRATIONS = ("auto", "none", "awq")


def resolve_calibration(config: QuantConfig, bits: int | None) -> str:
    """What the native builder does for linears of `bits` (None: float, nothing to prepare)."""
    if bits is None:
        return "none"
    if config.calibration == "auto":
        return "awq" if bits == 4 else "none"
    return config.calibration


def get_mode(name: str, config: QuantConfig | None = None) -> QuantMode:
    if name not in _MODES:
        raise QuantizationError(f"unknown quantization {name!r}; choose one of: {', '.join(_MODES)}")
    config = config or QuantConfig()
    if config.calibration not in CALIBRATIONS:
        raise QuantizationError(f"unknown calibration {config.calibration!r}; choose one of: {', '.join(CALIBRATIONS)}")
    for what, block in (("block_size", config.block_size), ("mlp_block_size", config.mlp_block_size)):
        if block is not None and (block < 16 or block & (block - 1)):
            raise QuantizationError(f"{what} must be a power of two, at least 16 (MatMulNBits); got {block}")
    if config.calibration_samples < 1:
        raise QuantizationError(f"calibration_samples must be at least 1, not {config.calibration_samples}")
    return _MODES[name](config)


class QuantMode:
    name: ClassVar[str] = ""
    native: ClassVar[bool] = True  # the native builder can emit this precision
    native_bits: ClassVar[int | None] = None  # its linears: None = float MatMul, else MatMulNBits bits
    native_float: ClassVar[str] = "float32"  # activations, float weights and KV cache of the native graph

    def __init__(self, config: QuantConfig):
        self.config = config

    def apply(self, model):  # onnx.ModelProto -> onnx.ModelProto
        return model

    def describe(self) -> Quantization:
        return Quantization(mode=self.name)


@register("fp32")
class Float32(QuantMode):
    pass


@register("fp16")
class Float16(QuantMode):
    """fp16 weights and compute. Native builder: fp16 KV cache, fp32 logits; optimum path: fp32 graph inputs
    and outputs (logits and KV cache)."""

    native_float = "float16"

    def apply(self, model):
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(model, keep_io_types=True)

    def describe(self) -> Quantization:
        return Quantization(mode=self.name, method="float16", bits=16)


class _MatMulNBits(QuantMode):
    """Block-wise weight-only quantization of every MatMul with a constant weight (incl. lm_head)."""

    bits: ClassVar[int] = 4

    def apply(self, model):
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        cfg = self.config
        algo = DefaultWeightOnlyQuantConfig(
            block_size=cfg.block_size,
            is_symmetric=cfg.symmetric,
            accuracy_level=cfg.accuracy_level,
            bits=self.bits,
        )
        logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
        level = logger.level
        logger.setLevel(logging.WARNING)  # it logs one INFO line per node
        try:
            quantizer = MatMulNBitsQuantizer(model, algo_config=algo)
            quantizer.process()
        finally:
            logger.setLevel(level)
        quantized = quantizer.model.model
        if not any(n.op_type == "MatMulNBits" for n in quantized.graph.node):
            raise QuantizationError(f"{self.name}: the graph has no MatMul with constant weights to quantize")
        return quantized

    def describe(self) -> Quantization:
        cfg = self.config
        return Quantization(
            mode=self.name,
            method="MatMulNBits",
            bits=self.bits,
            block_size=cfg.block_size,
            symmetric=cfg.symmetric,
            accuracy_level=cfg.accuracy_level,
        )


@register("int8")
class Int8(_MatMulNBits):
    bits = native_bits = 8


@register("int4")
class Int4(_MatMulNBits):
    bits = native_bits = 4
