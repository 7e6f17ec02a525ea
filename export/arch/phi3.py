"""Phi-3 family (Phi-3-mini, Phi-3.5-mini, Phi-4-mini): q/k/v stored as one `qkv_proj` and gate/up as one
`gate_up_proj` (read as stored: the builder's packed linears take them whole), rotary on the first
`partial_rotary_factor` x head_dim dims of each head (Phi-4-mini: 0.75), an optional sliding window on every
layer, no biases, and longrope ("su") scaling with its short and long factors (Phi-3.5/4-mini; see
edgelm.export.native.rope). Dropouts do nothing at inference."""

from __future__ import annotations

from typing import Any

from edgelm.export.arch.base import LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Declined, Field, check_rope, rope_domain, rope_kind
from edgelm.export.arch.mistral import _window
from edgelm.export.native.rope import LONGROPE

# transformers' Phi3Config takes longrope as exactly these keys ("su" is the old name of the type)
LONGROPE_KEYS = {"type", "rope_type", "short_factor", "long_factor"}


def _fraction(value) -> str | None:
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1)
    return None if ok else "expected a number in (0, 1]"


def _positive_int(value) -> str | None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
    return None if ok else "expected a positive integer"


def _factors(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in value)


def _rope(scaling: Any) -> str | None:
    """The common kinds, or longrope with its two factor lists (their length is checked against the rotary
    dims in Phi3.declined)."""
    if not isinstance(scaling, dict) or rope_kind(scaling) not in LONGROPE:
        return check_rope(scaling)
    extra = sorted(set(scaling) - LONGROPE_KEYS)
    if extra:
        return f"longrope setting(s) {', '.join(extra)} not implemented (native: short_factor, long_factor)"
    bad = [k for k in ("short_factor", "long_factor") if not _factors(scaling.get(k))]
    return f"longrope needs {' and '.join(bad)} as lists of positive numbers" if bad else None


@register("Phi3ForCausalLM")
class Phi3(ArchSpec):
    model_type = "phi3"
    tensor_names = {**ArchSpec.tensor_names, "qkv": "model.layers.{i}.self_attn.qkv_proj.weight",
                    "gate_up": "model.layers.{i}.mlp.gate_up_proj.weight"}
    layer_roles = ("input_norm", "post_norm", "qkv", "o", "gate_up", "down")
    fused = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
    fields = {**LLAMA_FIELDS, "partial_rotary_factor": Field(domain=_fraction, default=1.0),
              "sliding_window": Field(check=_window), "rope_scaling": Field(check=_rope, domain=rope_domain),
              # longrope's switch and (with max_position_embeddings) its attention factor; transformers' default
              "original_max_position_embeddings": Field(domain=_positive_int, default=4096)}
    # dropouts (inference ignores them); keys Phi-4-mini's config.json carries that transformers' Phi3 model
    # never reads (a stored lm_head bias would still be refused as a tensor the spec does not read)
    ignored = frozenset({"resid_pdrop", "embd_pdrop", "attention_dropout", "full_attn_mod", "interpolate_factor",
                         "lm_head_bias"})

    def declined(self) -> list[Declined]:
        declined = super().declined()
        scaling = self.config.get("rope_scaling")
        if not declined and rope_kind(scaling) in LONGROPE:
            half = self.rotary_dim // 2
            if int(self.hidden_size // self.num_heads * self.setting("partial_rotary_factor")) // 2 != half:
                return [Declined("head_dim", self.head_dim, "transformers' Phi3 counts longrope factors by "
                                 "hidden_size / num_attention_heads; another head_dim is not a config it loads")]
            declined += [Declined(f"rope_scaling.{key}", f"{len(scaling[key])} factors",
                                  f"expected {half} (one per rotary frequency: rotary_dim / 2)")
                         for key in ("short_factor", "long_factor") if len(scaling[key]) != half]
        return declined

    @property
    def rope_scaling(self) -> dict | None:
        """longrope completed with what transformers reads beside it: the switch length and the context
        extension its default attention factor comes from."""
        scaling = self.config.get("rope_scaling")
        if rope_kind(scaling) not in LONGROPE:
            return scaling
        return {"rope_type": "longrope", "short_factor": scaling.get("short_factor"), "long_factor": scaling.get("long_factor"),
                "original_max_position_embeddings": int(self.setting("original_max_position_embeddings")),
                "max_position_embeddings": self.context_length}

    def layer_window(self, layer: int) -> int | None:
        return self.config.get("sliding_window")
