"""Mistral: Llama-shaped with an optional sliding attention window."""

from edgelm.export.arch.base import ArchSpec, register


@register("MistralForCausalLM")
class Mistral(ArchSpec):
    model_type = "mistral"

    @property
    def sliding_window(self) -> int | None:
        return self.config.get("sliding_window")
