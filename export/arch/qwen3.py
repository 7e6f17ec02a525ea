"""Qwen3 family: Qwen3-0.6B/1.7B/4B/8B and the R1 distills built on them. Qwen2's layout without the
always-on q/k/v biases (`attention_bias` switches q/k/v/o biases), plus an RMSNorm over each head of q and k
before rotary (`q_norm`, `k_norm`: one gain of head_dim values each), and head_dim set apart from
hidden_size / heads (0.6B: 1024 / 16 heads, head_dim 128)."""

from edgelm.export.arch.base import ArchSpec, register
from edgelm.export.arch.contract import Field
from edgelm.export.arch.qwen2 import Qwen2

QWEN3_BIASES = {role: "attention_bias" for role in ("q_bias", "k_bias", "v_bias", "o_bias")}


@register("Qwen3ForCausalLM")
class Qwen3(Qwen2):
    model_type = "qwen3"
    qk_norm = True
    tensor_names = {**ArchSpec.tensor_names, "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
                    "k_norm": "model.layers.{i}.self_attn.k_norm.weight"}
    layer_roles = (*ArchSpec.layer_roles, "q_norm", "k_norm")
    optional_roles = QWEN3_BIASES
    fields = {**Qwen2.fields, "attention_bias": Field((True, False), default=False)}
