"""Export defaults, defined once: the CLI and the API read them from here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QuantConfig:
    """Knobs of the weight-only modes (int4 / int8, MatMulNBits)."""

    block_size: int = 32  # attention linears, embedding, lm_head
    mlp_block_size: int | None = 128  # gate/up/down, most of the weights (native builder; None = block_size)
    symmetric: bool = False  # zero points cost MatMulNBits nothing measurable on CPU and round closer
    accuracy_level: int = 4  # 4 = int8 activations on CPU, MatMulNBits' fastest path
    # auto (awq for native int4) | none (min/max rounding) | search (weighted scale search, no text) | awq
    # (activation-aware scales) | gptq (awq scales, then error-compensating rounding against the inputs' moments)
    calibration: str = "auto"
    calibration_samples: int = 4  # corpus windows (128 tokens) the awq calibration forward runs
    gptq_samples: int = 32  # corpus windows (128 tokens) whose inputs' second moments gptq rounds against
    mix: str = "uniform"  # per-linear precision table (edgelm.export.native.precision.MIXES)


@dataclass(frozen=True)
class NpuConfig:
    """Knobs of `--target npu-qnn`: the static graph pair and its QDQ quantization."""

    context: int = 512  # positions the graphs attend over (prompt + generated), fixed at export
    chunk: int = 32  # tokens per run of the one graph (a decode step is one real token, padded to the chunk)
    activations: str = "uint16"  # QDQ activation type (a16)
    weights: str = "int8"  # QDQ type of the linears' weights (w8); int4 halves them (LPBQ blocks, per channel)
    block_size: int = 32  # int4 per-channel weights: LPBQ block (input rows sharing a 4-bit block scale)
    calibration: str = "auto"  # LPBQ int4: auto/awq = activation-aware scales first (as the CPU int4 path); none
    # LPBQ int4: linears kept 8-bit per channel, by a substring of their graph name ("lm_head", "layers.0/mlp")
    eight_bit: tuple[str, ...] = ("lm_head",)
    # LPBQ int4: a layer whose 4-bit weights add more than this to its measured output error (at 4 bits minus
    # at 8, each relative to what the layer adds to the residual stream, on calibration runs) stays 8-bit
    w4_max_cost: float = 0.1
    awq_samples: int = 4  # corpus windows (128 tokens) of the awq forward
    per_channel: bool = True  # one scale per output channel (the HTP takes them on MatMul), else per tensor
    calibration_samples: int = 16  # corpus windows run through the fp32 pair (every other one as a chat)
    calibration_decode: int = 16  # greedy tokens generated after each window
    widen: float = 1.2  # activation ranges widened by this factor (not the mask, cos/sin, [0,1], K/V tensors)
    smooth_keys: float = 1.0  # flatten K's channel ranges (exponent; 0 = off): the HTP reads K at 8 bits
    compile: bool = True  # compile the QNN EP-context binaries at export when onnxruntime-qnn is present
    # keep the QDQ graphs (a second copy of the weights) beside the compiled context binary: the package then
    # also runs on other providers and recompiles where the binary does not load (another SoC or QNN version)
    keep_qdq: bool = False


@dataclass(frozen=True)
class ExportConfig:
    quant: str = "int4"
    quant_config: QuantConfig = field(default_factory=QuantConfig)
    backend: str = "auto"  # auto = native where the architecture and precision allow, else optimum
    target: str = "cpu"  # cpu: dynamic-shape graph | npu-qnn: static QDQ graph pair for the QNN HTP
    npu: NpuConfig = field(default_factory=NpuConfig)
    force: bool = False
    progress: bool = True
    check: bool = True  # run the package against its source model before putting it in place (export.check)
    min_agreement: float | None = None  # quantized: fail when the self-check's top-1 agreement is below this
    kld: bool = False  # the self-check also scores KLD as llama-perplexity does (the license texts; slower)
