"""Export defaults, defined once: the CLI and the API read them from here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QuantConfig:
    """Knobs of the weight-only modes (int4 / int8, MatMulNBits)."""

    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4  # 4 = int8 activations on CPU, MatMulNBits' fastest path


@dataclass(frozen=True)
class ExportConfig:
    quant: str = "int4"
    quant_config: QuantConfig = field(default_factory=QuantConfig)
    backend: str = "auto"  # auto = native where the architecture and precision allow, else optimum
    force: bool = False
    progress: bool = True
