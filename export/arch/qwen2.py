"""Qwen2 family: Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen. Biases on q/k/v (always), none on o or the MLP.

Sliding window as transformers applies it: only with `use_sliding_window`, and only on the layers that
`layer_types` marks "sliding_attention" (absent: the layers from `max_window_layers` on)."""

from typing import Any

from edgelm.export.arch.base import LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field

LAYER_TYPES = ("full_attention", "sliding_attention")


def _layer_types(value: Any) -> str | None:
    if value is None or (isinstance(value, list) and set(value) <= set(LAYER_TYPES)):
        return None
    return f"layer types other than {', '.join(LAYER_TYPES)} are not implemented"


@register("Qwen2ForCausalLM")
class Qwen2(ArchSpec):
    model_type = "qwen2"
    optional_roles = {"q_bias": True, "k_bias": True, "v_bias": True}
    fields = {**LLAMA_FIELDS, "use_sliding_window": Field((True, False), default=False),
              "sliding_window": Field(), "max_window_layers": Field(default=28),
              "layer_types": Field(check=_layer_types)}

    def layer_window(self, layer: int) -> int | None:
        window = self.config.get("sliding_window") if self.setting("use_sliding_window") else None
        types = self.config.get("layer_types") or [
            "sliding_attention" if window is not None and i >= self.setting("max_window_layers") else "full_attention"
            for i in range(self.num_layers)]
        return window if types[layer] == "sliding_attention" else None
