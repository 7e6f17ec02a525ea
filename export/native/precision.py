"""Per-linear precision: which bits and block size each MatMulNBits linear of a native package gets.

A linear is named by its role in the layer (the builder's graph names): `qkv` (q, k, v packed), `o`, `gate_up`
(gate and up packed), `down`, and `lm_head` (a tied model's vocabulary table, the embedding, follows it). A
precision table is data: role -> rule, a rule being one (bits, block) for every layer or a function of the
layer (llama.cpp's k-quant mixes give more bits to some layers' tensors: the first and last eighth and every
third layer between). The table a package was built with is recorded in its manifest (`Quantization.linears`:
every linear's bits and block), so `edgelm info` shows it and the runtime never guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

ROLES = ("qkv", "o", "gate_up", "down", "lm_head")
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


def more_bits(layer: int, layers: int) -> bool:
    """The layers llama.cpp's k-quant mixes favour: the first and last eighth, and every third one between."""
    eighth = layers // 8
    return layer < eighth or layer >= layers - eighth or (layer - eighth) % 3 == 2


Rule = Precision | Callable[[int, int], Precision]


@dataclass(frozen=True)
class PrecisionTable:
    """role -> rule; roles absent take `default`."""

    default: Precision
    rules: tuple[tuple[str, Rule], ...] = ()

    def choose(self, name: str, layers: int) -> Precision:
        role, layer = role_of(name)
        rule = dict(self.rules).get(role, self.default)
        return rule(layer or 0, layers) if callable(rule) else rule


def _uniform(bits: int, config) -> PrecisionTable | None:
    return None  # every linear at `bits`, attention block_size, MLP mlp_block_size (LinearFormat's own)


# mix name -> (bits of the mode, QuantConfig) -> table (None: uniform)
MIXES: dict[str, Callable] = {"uniform": _uniform}


def precision_table(mix: str, bits: int, config) -> PrecisionTable | None:
    if mix not in MIXES:
        from edgelm.errors import QuantizationError

        raise QuantizationError(f"unknown precision mix {mix!r}; choose one of: {', '.join(MIXES)}")
    return MIXES[mix](bits, config)
