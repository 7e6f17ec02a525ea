"""Llama family: SmolLM2, Llama 3.x, DeepSeek-R1-Distill-Llama."""

from edgelm.export.arch.base import ArchSpec, register


@register("LlamaForCausalLM")
class Llama(ArchSpec):
    model_type = "llama"
