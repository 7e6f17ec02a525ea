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
CALIBRATIONS = ("auto", "none", "search", "awq", "gptq")
CALIBRATED = ("awq", "gptq")  # the ones that run the calibration forward (awq scales; gptq: awq scales + GPTQ)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits' accuracy_level attribute


def resolve_calibration(config: QuantConfig, bits: int | None, auto: str | None = None) -> str:
    """What the native builder does for linears of `bits` (None: float, nothing to prepare); `auto`: the mode's
    own choice for "auto" (the gptq formats), else awq for int4 and plain rounding for int8."""
    if bits is None:
        return "none"
    if config.calibration == "auto":
        return auto or ("awq" if bits == 4 else "none")
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
    if config.accuracy_level not in ACCURACY_LEVELS:
        raise QuantizationError(f"accuracy_level must be one of {', '.join(map(str, ACCURACY_LEVELS))} (MatMulNBits: "
                                f"0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations), not {config.accuracy_level}")
    if config.calibration_samples < 1:
        raise QuantizationError(f"calibration_samples must be at least 1, not {config.calibration_samples}")
    default = QuantConfig()
    given = [f for f in ("block_size", "mlp_block_size") if getattr(config, f) != getattr(default, f)]
    if _MODES[name].mix and given:  # its precision table sets every linear's block: the knob would be ignored
        raise QuantizationError(f"{name} sets each linear's block size itself (its precision table, "
                                f"export/native/precision.py); drop --{given[0].replace('_', '-')}, or use --quant "
                                f"int{_MODES[name].native_bits} to choose block sizes")
    return _MODES[name](config)


class QuantMode:
    name: ClassVar[str] = ""
    native: ClassVar[bool] = True  # the native builder can emit this precision
    native_bits: ClassVar[int | None] = None  # its linears: None = float MatMul, else MatMulNBits bits
    native_float: ClassVar[str] = "float32"  # activations, float weights and KV cache of the native graph
    mix: ClassVar[str | None] = None  # its per-linear precision table (export.native.precision.MIXES); None: uniform
    calibration: ClassVar[str | None] = None  # what --calibration auto means for it (None: resolve_calibration's)
    optimum: ClassVar[bool] = True  # the optimum path can make it too (else the native builder only)

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
        gemm_to_matmul(model)  # GPT-2's Conv1D and the like export as Gemm, which MatMulNBits does not take
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


def gemm_to_matmul(model) -> int:
    """Pass: every Gemm with a constant B (alpha = beta = 1, no transA) becomes MatMul (+ Add of C), with B
    stored (in, out) as MatMul reads it. Exact; returns how many were rewritten.

        Gemm(A, B, C; transB)  ->  MatMul(A, B or B^T) ─> Add(C)
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):  # a transposed copy under its own name: B may have other readers
            transposed = numpy_helper.to_array(inits[weight]).T.copy()
            weight = f"{weight}/transposed"
            if weight not in inits:
                inits[weight] = numpy_helper.from_array(transposed, weight)
                model.graph.initializer.append(inits[weight])
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.name or node.output[0]}/MatMul_out" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}/MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}/Add"))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
        kept = [t for t in model.graph.initializer if t.name in used]  # originals only Gemm read, transposed
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return rewritten


@register("int8")
class Int8(_MatMulNBits):
    bits = native_bits = 8


@register("int4")
class Int4(_MatMulNBits):
    bits = native_bits = 4


@register("int4-fp16")
class Int4Fp16(Int4):
    """int4 weights with fp16 activations and KV cache (fp32 logits): the GPU format (MatMulNBits with float16
    inputs). Native builder only."""

    native_float = "float16"
    optimum = False


class _Gptq(QuantMode):
    """The quality-per-byte formats (issue 28): GPTQ rounding against calibration inputs after awq scaling, and a
    per-linear precision table (export.native.precision.MIXES[name]). Native builder only; an architecture whose
    calibration forward is not modelled (fused weights, Gemma's norms) is refused by name (`--calibration none`
    keeps the table with plain rounding)."""

    optimum = False
    calibration = "gptq"

    def describe(self) -> Quantization:
        cfg = self.config
        # bits and blocks per linear: the manifest's `linears` (the precision table as built)
        return Quantization(mode=self.name, method="MatMulNBits", bits=self.native_bits,
                            accuracy_level=cfg.accuracy_level)


@register("int4-gptq")
class Int4Gptq(_Gptq):
    """The 4-bit quality tier (llama.cpp Q4_K_M's class): layer linears int4 (block 32, zero points), qkv and down
    int8 in some layers (export.native.precision), the vocabulary table (embedding and tied lm_head) int8."""

    native_bits = 4
    mix = "int4-gptq"


@register("int4-gptq-compact")
class Int4GptqCompact(_Gptq):
    """The smaller 4-bit tier (Q4_0's size class): int4 everywhere, the vocabulary table too, down int8 in
    about half the layers."""

    native_bits = 4
    mix = "int4-gptq-compact"


@register("int8-gptq")
class Int8Gptq(_Gptq):
    """Every linear int8, symmetric, blocks of 64 with float16 scales (8.25 bits a weight; llama.cpp's Q8_0 is 8.5)."""

    native_bits = 8
    mix = "int8-gptq"

