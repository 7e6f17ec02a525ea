"""Per-linear precision: which bits and block size each MatMulNBits linear of a native package gets.

A linear is named by its role in the layer (the builder's graph names): `qkv` (q, k, v packed), `o`, `gate_up`
(gate and up packed), `down`, and `lm_head` (a tied model's vocabulary table, the embedding, follows it). A
precision table is data: role -> (bits, block, symmetric), optionally only in a named set of layers that scales
with the depth (`outer_layers`, `late_layers`, `spread_layers`). The table a package was built with is recorded in its manifest (`Quantization.linears`: every linear's bits and block), so `edgelm info`
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
    """role -> precision, optionally only in some layers (`layer_rules`: role, layers, precision; first match
    wins, before `rules`); roles absent take `default`."""

    default: Precision
    rules: tuple[tuple[str, Precision], ...] = ()
    layer_rules: tuple[tuple[str, frozenset[int], Precision], ...] = ()

    def choose(self, name: str) -> Precision:
        role, layer = role_of(name)
        for rule_role, layers, p in self.layer_rules:
            if rule_role == role and layer in layers:
                return p
        return dict(self.rules).get(role, self.default)


def _uniform(bits: int, config, layers: int) -> PrecisionTable | None:
    return None  # every linear at `bits`, attention block_size, MLP mlp_block_size (LinearFormat's own)


INT8 = Precision(8, 64, True)  # also the vocabulary table's: llama.cpp keeps its output matrix at 6-8 bits too


def _edge(n: int) -> int:
    return -(-n // 8)  # an eighth of the layers, at least one


def outer_layers(n: int) -> frozenset[int]:
    """The first and last eighth of `n` layers (at least one each): where a role at int8 buys most."""
    return frozenset(range(min(_edge(n), n))) | frozenset(range(max(n - _edge(n), 0), n))


def spread_layers(n: int) -> frozenset[int]:
    """outer_layers plus every third layer between them: about half of the layers."""
    return outer_layers(n) | frozenset(range(_edge(n) + 1, n - _edge(n), 3))


def late_layers(n: int) -> frozenset[int]:
    """outer_layers plus the second half of the layers."""
    return outer_layers(n) | frozenset(range(n // 2, n))


def _int4_gptq(bits: int, config, layers: int) -> PrecisionTable:
    """The 4-bit quality tier: linears int4 in blocks of 32 with zero points; the vocabulary table int8; qkv at
    int8 in late_layers and down at int8 in outer_layers. Measured on SmolLM2-135M (KLD, MiB; all-int4 layers
    0.137 at 92.1): qkv int8 in the second half of the layers -0.019 for 3.5 MiB, in the first half -0.014;
    down int8 in spread_layers -0.028 for 5.7 MiB, in the first or last half -0.020 / -0.022; qkv everywhere
    -0.034 for 7.1 MiB; qkv in spread_layers with down in outer_layers 0.105 at 98.7 (docs/benchmarks.md)."""
    return PrecisionTable(Precision(4, 32), (("lm_head", INT8),),
                          (("qkv", late_layers(layers), INT8), ("down", outer_layers(layers), INT8)))


def _int4_gptq_compact(bits: int, config, layers: int) -> PrecisionTable:
    """The smaller tier: int4 in blocks of 32 with zero points everywhere, the vocabulary table included (GPTQ
    against the lm_head's inputs), down at int8 in spread_layers. On SmolLM2: 85.6 MiB, KLD 0.146; without
    the int8 downs 79.8 MiB, 0.175; with the table rounded by the unweighted search instead of GPTQ, 0.230."""
    return PrecisionTable(Precision(4, 32), (), (("down", spread_layers(layers), INT8),))


def _int8_gptq(bits: int, config, layers: int) -> PrecisionTable:
    return PrecisionTable(INT8)


# mix name -> (bits of the mode, QuantConfig, number of layers) -> table (None: uniform)
MIXES: dict[str, Callable] = {"uniform": _uniform, "int4-gptq": _int4_gptq, "int4-gptq-compact": _int4_gptq_compact,
                              "int8-gptq": _int8_gptq}


def precision_table(mix: str, bits: int, config, layers: int) -> PrecisionTable | None:
    if mix not in MIXES:
        from edgelm.errors import QuantizationError

        raise QuantizationError(f"unknown precision mix {mix!r}; choose one of: {', '.join(MIXES)}")
    return MIXES[mix](bits, config, layers)
