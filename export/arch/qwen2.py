"""Qwen2 family: Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen (biases on q/k/v, otherwise Llama-shaped)."""

from edgelm.export.arch.base import ArchSpec, register


@register("Qwen2ForCausalLM")
class Qwen2(ArchSpec):
    model_type = "qwen2"

    @property
    def sliding_window(self) -> int | None:
        return self.config.get("sliding_window") if self.config.get("use_sliding_window") else None
