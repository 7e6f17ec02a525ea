"""Granite family (Granite-3.x dense): the Llama layout with four scalars: the embedding is multiplied by
`embedding_multiplier`, each attention and MLP output by `residual_multiplier` before it joins the residual,
attention scores are scaled by `attention_multiplier` (instead of 1/sqrt(head_dim)), and the logits are
divided by `logits_scaling`."""

from edgelm.export.arch.base import LLAMA_BIASES, LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field, positive_number


@register("GraniteForCausalLM")
class Granite(ArchSpec):
    model_type = "granite"
    optional_roles = LLAMA_BIASES
    multiplier_keys = {"embedding": "embedding_multiplier", "residual": "residual_multiplier",
                       "attention": "attention_multiplier", "logits": "logits_scaling"}
    fields = {**LLAMA_FIELDS, "attention_bias": Field((True, False), default=False),
              "mlp_bias": Field((True, False), default=False),
              **{key: Field(check=positive_number, default=1.0) for key in multiplier_keys.values()}}
