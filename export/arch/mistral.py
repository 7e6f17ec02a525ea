"""Mistral: Llama-shaped, no biases, an optional sliding attention window on every layer."""

from typing import Any

from edgelm.export.arch.base import LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field


def _window(value: Any) -> str | None:
    return None if value is None or (isinstance(value, int) and value > 0) else "expected a positive integer or null"


@register("MistralForCausalLM")
class Mistral(ArchSpec):
    model_type = "mistral"
    fields = {**LLAMA_FIELDS, "sliding_window": Field(check=_window)}

    def layer_window(self, layer: int) -> int | None:
        return self.config.get("sliding_window")
