"""Gemma-3 text family (Gemma-3-1B, and the text tower of 4B+): RMSNorm gains stored as w with (1 + w)
applied, the embedding multiplied by sqrt(hidden_size), GeGLU (`hidden_activation`), a norm after attention
and after the MLP besides the ones before them, a per-head q/k norm, attention scaled by
query_pre_attn_scalar ** -0.5, and sliding-window layers (`layer_types`) whose rotary uses its own base
(`rope_local_base_freq`, no scaling) while the full layers use `rope_theta` and `rope_scaling`. Optional
attention and final-logit soft-capping (tanh), as transformers applies them when set."""

from typing import Any

from edgelm.export.arch.base import LLAMA_FIELDS, ArchSpec, register
from edgelm.export.arch.contract import Field, is_false
from edgelm.export.arch.contract import positive_number as _positive
from edgelm.export.arch.mistral import _window
from edgelm.export.native.activations import ACTIVATIONS

LAYER_TYPES = ("full_attention", "sliding_attention")


def _layer_types(value: Any) -> str | None:
    if value is None or (isinstance(value, list) and set(value) <= set(LAYER_TYPES)):
        return None
    return f"layer types other than {', '.join(LAYER_TYPES)} are not implemented"


@register("Gemma3ForCausalLM")
class Gemma3(ArchSpec):
    model_type = "gemma3_text"
    qk_norm = True
    norm_offset = 1.0
    sandwich_norms = True
    awq_forward = False  # the calibration forward does not model these norms yet: int4 rounds plainly
    tensor_names = {**ArchSpec.tensor_names,
                    "post_norm": "model.layers.{i}.pre_feedforward_layernorm.weight",  # the norm feeding the MLP
                    "attn_out_norm": "model.layers.{i}.post_attention_layernorm.weight",
                    "mlp_out_norm": "model.layers.{i}.post_feedforward_layernorm.weight",
                    "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
                    "k_norm": "model.layers.{i}.self_attn.k_norm.weight"}
    layer_roles = (*ArchSpec.layer_roles, "attn_out_norm", "mlp_out_norm", "q_norm", "k_norm")
    optional_roles = {role: "attention_bias" for role in ("q_bias", "k_bias", "v_bias", "o_bias")}
    fields = {**{k: v for k, v in LLAMA_FIELDS.items() if k != "hidden_act"},
              "hidden_activation": Field(tuple(ACTIVATIONS), default="gelu_pytorch_tanh"),
              "tie_word_embeddings": Field((True, False), default=True),
              "attention_bias": Field((True, False), default=False),
              "query_pre_attn_scalar": Field(domain=_positive, default=256),
              "sliding_window": Field(check=_window, default=4096), "layer_types": Field(check=_layer_types),
              "rope_local_base_freq": Field(domain=_positive, default=10000.0),
              "final_logit_softcapping": Field(domain=_positive), "attn_logit_softcapping": Field(domain=_positive),
              "use_bidirectional_attention": Field(check=is_false)}
    ignored = frozenset({"attention_dropout", "sliding_window_pattern", "_sliding_window_pattern"})

    @property
    def activation(self) -> str:
        return str(self.setting("hidden_activation"))

    def _types(self) -> list[str]:
        pattern = self.config.get("sliding_window_pattern") or 6
        return self.config.get("layer_types") or [
            "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(self.num_layers)]

    def layer_window(self, layer: int) -> int | None:
        return self.setting("sliding_window") if self._types()[layer] == "sliding_attention" else None

    def layer_rope_base(self, layer: int) -> tuple[float, dict | None]:
        if self._types()[layer] == "sliding_attention":
            return float(self.setting("rope_local_base_freq")), None
        return self.rope_theta, self.rope_scaling

    @property
    def attention_scale(self) -> float | None:
        return float(self.setting("query_pre_attn_scalar")) ** -0.5

    @property
    def embedding_scale(self) -> float | None:
        return float(self.hidden_size) ** 0.5

    @property
    def softcaps(self) -> dict[str, float]:
        caps = {"attention": self.config.get("attn_logit_softcapping"), "logits": self.config.get("final_logit_softcapping")}
        return {k: float(v) for k, v in caps.items() if v is not None}


@register("Gemma2ForCausalLM")
class Gemma2(Gemma3):
    """Gemma-2 (2B/9B): Gemma-3's layout without the q/k norm and with one rope base, every other layer sliding
    (from the first), and soft-capping on by default (attention 50, final logits 30, Gemma2Config's
    defaults: an absent key means them)."""

    model_type = "gemma2"
    qk_norm = False
    layer_roles = (*ArchSpec.layer_roles, "attn_out_norm", "mlp_out_norm")
    fields = {**{k: v for k, v in Gemma3.fields.items() if k not in ("rope_local_base_freq", "use_bidirectional_attention")},
              "final_logit_softcapping": Field(domain=_positive, default=30.0),
              "attn_logit_softcapping": Field(domain=_positive, default=50.0)}

    def _types(self) -> list[str]:
        return self.config.get("layer_types") or [
            "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(self.num_layers)]

    def layer_rope_base(self, layer: int) -> tuple[float, dict | None]:
        return self.rope_theta, self.rope_scaling

    @property
    def softcaps(self) -> dict[str, float]:
        caps = {"attention": self.setting("attn_logit_softcapping"), "logits": self.setting("final_logit_softcapping")}
        return {k: float(v) for k, v in caps.items() if v is not None}
