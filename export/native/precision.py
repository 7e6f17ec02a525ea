"""Per-linear precision: which bits and block size each MatMulNBits linear of a native package gets.

A linear is named by its role in the layer (the builder's graph names): `qkv` (q, k, v packed), `o`, `gate_up`
(gate and up packed), `down`, and `lm_head` (a tied model's vocabulary table, the embedding, follows it). A
precision table is data: role -> (bits, block, symmetric), the same in every layer. The table a package was
built with is recorded in its manifest (`Quantization.linears`: every linear's bits and block), so `edgelm info`
shows it and the runtime never guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

_ROLE_OF = {"qkv_proj": "qkv", "o_proj": "o", "gate_up_proj": "gate_up", "gate_proj": "gate_up",
            "up_proj": "gate_up", "down_proj": "down", "lm_head": "lm_head", "embed_tokens": "lm_head"}
_LAYER = re.compile(r"/layers\.(\d+)/")


@dataclass(frozen=True)
class Precision:
    bits: int
    block: int
    symmetric: bool | None = None  # None: the mode's (QuantConfig.symmetric)


def role_of(name: str) -> tuple[str, int | None]:
    """(role, layer) of a builder linear name such as /model/layers.3/mlp/down_proj or /lm_head."""
    tail = name.rstrip("/").rsplit("/", 1)[-1]
    layer = _LAYER.search(name)
    return _ROLE_OF.get(tail, tail), int(layer.group(1)) if layer else None


@dataclass(frozen=True)
class PrecisionTable:
    """role -> precision; roles absent take `default`."""

    default: Precision
    rules: tuple[tuple[str, Precision], ...] = ()

    def choose(self, name: str) -> Precision:
        return dict(self.rules).get(role_of(name)[0], self.default)


def _uniform(bits: int, config) -> PrecisionTable | None:
    return None  # every linear at `bits`, attention block_size, MLP mlp_block_size (LinearFormat's own)


VOCAB8 = Precision(8, 64, True)  # the vocabulary table at int8: llama.cpp keeps its output matrix at 6-8 bits too


def _int4_gptq(bits: int, config) -> PrecisionTable:
    """Layer linears int4 in blocks of 32 with zero points, the vocabulary table int8. On SmolLM2-135M, each
    role's share of the KL divergence (that role at int4, everything else int8, GPTQ): gate_up 0.052, down
    0.040, qkv 0.037, o 0.009; sums to the measured whole (0.140): every role matters about alike per byte,
    and blocks of 64 on the MLP added 0.039, so the layers stay at block 32 (docs/benchmarks.md)."""
    return PrecisionTable(Precision(4, 32), (("lm_head", VOCAB8),))


def _int4_gptq_compact(bits: int, config) -> PrecisionTable:
    """The smaller tier: int4_gptq's layers with the vocabulary table at int4 too (block 32, zero points). On
    SmolLM2: 84.4 MiB of graph, KLD 0.230; layers in blocks of 64 (down 128) instead came to 76.5 MiB, KLD 0.309."""
    return PrecisionTable(Precision(4, 32))


def _int8_gptq(bits: int, config) -> PrecisionTable:
    return PrecisionTable(Precision(8, 64, True))


# mix name -> (bits of the mode, QuantConfig) -> table (None: uniform)
MIXES: dict[str, Callable] = {"uniform": _uniform, "int4-gptq": _int4_gptq, "int4-gptq-compact": _int4_gptq_compact,
                              "int8-gptq": _int8_gptq}


def precision_table(mix: str, bits: int, config) -> PrecisionTable | None:
    if mix not in MIXES:
        from edgelm.errors import QuantizationError

        raise QuantizationError(f"unknown precision mix {mix!r}; choose one of: {', '.join(MIXES)}")
    return MIXES[mix](bits, config)
