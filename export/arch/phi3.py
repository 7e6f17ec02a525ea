"""Phi-3 family (Phi-3-mini, Phi-3.5-mini, Phi-4-mini): q/k/v stored as one `qkv_proj` and gate/up as one
`gate_up_proj` (read as stored: the builder's packed linears take them whole), rotary on the first
`partial_rotary_factor` x head_dim dims of each head (Phi-4-mini: 0.75), an optional sliding window on every
layer, no biases. Dropouts do nothing at inference. longrope/su rope scaling (Phi-3.5/4-mini) is declined by
the rope contract until it is built; optimum exports those under --backend auto."""

from edgelm.export.arch.base import LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field
from edgelm.export.arch.mistral import _window


def _fraction(value) -> str | None:
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1)
    return None if ok else "expected a number in (0, 1]"


@register("Phi3ForCausalLM")
class Phi3(ArchSpec):
    model_type = "phi3"
    tensor_names = {**ArchSpec.tensor_names, "qkv": "model.layers.{i}.self_attn.qkv_proj.weight",
                    "gate_up": "model.layers.{i}.mlp.gate_up_proj.weight"}
    layer_roles = ("input_norm", "post_norm", "qkv", "o", "gate_up", "down")
    fused = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
    fields = {**LLAMA_FIELDS, "partial_rotary_factor": Field(check=_fraction, default=1.0),
              "sliding_window": Field(check=_window)}
    # dropouts (inference ignores them); the length longrope switches at (longrope itself is declined above)
    ignored = frozenset({"resid_pdrop", "embd_pdrop", "attention_dropout", "original_max_position_embeddings"})

    def layer_window(self, layer: int) -> int | None:
        return self.config.get("sliding_window")
