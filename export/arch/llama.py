"""Llama family: SmolLM2, Llama 3.x, DeepSeek-R1-Distill-Llama. Optional biases: q/k/v/o with
`attention_bias`, gate/up/down with `mlp_bias`."""

from edgelm.export.arch.base import LLAMA_BIASES, LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field


@register("LlamaForCausalLM")
class Llama(ArchSpec):
    model_type = "llama"
    optional_roles = LLAMA_BIASES
    fields = {**LLAMA_FIELDS, "attention_bias": Field((True, False)), "mlp_bias": Field((True, False))}
