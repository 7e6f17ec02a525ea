"""SmolLM3 family (SmolLM3-3B): the Llama layout with layers that skip rotary ("NoPE"): `no_rope_layers[i]`
is 1 where layer i rotates q and k, 0 where it does not (absent: every `no_rope_layer_interval`-th layer,
counting from 1, is NoPE). A sliding window, where `use_sliding_window`, applies to the layers `layer_types`
marks "sliding_attention"."""

from typing import Any

from edgelm.export.arch.base import LLAMA_BIASES, LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field
from edgelm.export.arch.qwen2 import _layer_types


def _rope_flags(value: Any) -> str | None:
    if value is None or (isinstance(value, list) and all(v in (0, 1) and not isinstance(v, bool) for v in value)):
        return None
    return "no_rope_layers must be a list of 0/1 per layer"


def _interval(value: Any) -> str | None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
    return None if ok else "expected a positive integer"


@register("SmolLM3ForCausalLM")
class SmolLM3(ArchSpec):
    model_type = "smollm3"
    optional_roles = LLAMA_BIASES
    # SmolLM3Config leaves tie_word_embeddings to PretrainedConfig's default (True), unlike LlamaConfig
    fields = {**LLAMA_FIELDS, "tie_word_embeddings": Field((True, False), default=True),
              "attention_bias": Field((True, False), default=False),
              "mlp_bias": Field((True, False), default=False), "no_rope_layers": Field(check=_rope_flags),
              "no_rope_layer_interval": Field(check=_interval, default=4), "use_sliding_window": Field((True, False), default=False),
              "sliding_window": Field(), "layer_types": Field(check=_layer_types)}

    def _rope_flags(self) -> list[int]:
        flags = self.config.get("no_rope_layers")
        if flags is None:
            interval = self.setting("no_rope_layer_interval")
            flags = [int((i + 1) % interval != 0) for i in range(self.num_layers)]
        return flags

    def layer_rope(self, layer: int) -> bool:
        return bool(self._rope_flags()[layer])

    def layer_window(self, layer: int) -> int | None:
        window = self.config.get("sliding_window") if self.setting("use_sliding_window") else None
        types = self.config.get("layer_types") or [
            "sliding_attention" if window is not None and not self.layer_rope(i) else "full_attention"
            for i in range(self.num_layers)]
        return window if window is not None and types[layer] == "sliding_attention" else None
