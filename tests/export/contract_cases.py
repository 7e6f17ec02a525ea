"""Configs with every optional feature of each registered architecture switched on, for parity tests of the
config contract (test_contract, test_awq, test_npu). Built with `build_random` (every tensor random)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SHAPE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256}
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}

# Every registered architecture with every optional feature it has switched on; `tf5`: the exported folder's
# config is rewritten to transformers 5's layout (rope settings under rope_parameters).
CASES = {
    "llama-all-features": ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", **SHAPE, "head_dim": 32,
                            "attention_bias": True, "mlp_bias": True, "hidden_act": "gelu_pytorch_tanh",
                            "rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE, "tie_word_embeddings": False},
                           False),
    "llama-tf5-llama3-rope": ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", **SHAPE,
                               "rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE, "tie_word_embeddings": True},
                              True),
    "llama-linear-rope-gelu": ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", **SHAPE,
                                "hidden_act": "gelu", "rope_scaling": {"rope_type": "linear", "factor": 4.0},
                                "attention_bias": True}, False),
    "qwen2-window-from-layer-1": ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **SHAPE,
                                   "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1,
                                   "rope_theta": 1000000.0}, False),
    "qwen2-tf5": ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **SHAPE, "rope_theta": 1000000.0,
                   "tie_word_embeddings": True}, True),
    # q/k RMSNorm per head before rotary, head_dim apart from hidden / heads, q/k/v/o biases, a window
    "qwen3-all-features": ({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", **SHAPE, "head_dim": 32,
                            "attention_bias": True, "use_sliding_window": True, "sliding_window": 8,
                            "max_window_layers": 1, "rope_theta": 1000000.0, "tie_word_embeddings": True}, False),
    # NoPE layers (0 and 2 of 3), a window on them, q/k/v/o and MLP biases, head_dim = hidden / heads
    "smollm3-all-features": ({"architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3", **SHAPE,
                              "no_rope_layers": [0, 1, 0], "use_sliding_window": True, "sliding_window": 8,
                              "attention_bias": True, "mlp_bias": True, "rope_theta": 2000000.0,
                              "tie_word_embeddings": True}, False),
    # all four scalars away from 1, biases, untied
    "granite-all-features": ({"architectures": ["GraniteForCausalLM"], "model_type": "granite", **SHAPE,
                              "embedding_multiplier": 3.0, "residual_multiplier": 0.5, "attention_multiplier": 0.09,
                              "logits_scaling": 2.5, "attention_bias": True, "mlp_bias": True,
                              "rope_theta": 10000000.0, "tie_word_embeddings": False}, False),
    # fused qkv_proj and gate_up_proj, rotary on 3/4 of each head, a window on every layer
    "phi3-all-features": ({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", **SHAPE, "head_dim": 64,
                           "partial_rotary_factor": 0.75, "sliding_window": 8, "rope_theta": 10000.0,
                           "tie_word_embeddings": True, "pad_token_id": 0}, False),
    # Phi-3.5/4-mini: longrope switching to its long factors past 16 positions (the 32 generated tokens cross
    # it; the full-sequence pass runs long), its default attention factor, rotary on 48 of 64 dims
    "phi3-longrope": ({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", **SHAPE, "hidden_size": 128,
                       "num_attention_heads": 2, "num_key_value_heads": 1, "partial_rotary_factor": 0.75,
                       "original_max_position_embeddings": 16, "rope_theta": 10000.0,
                       "rope_scaling": {"type": "longrope", "short_factor": [1.0 + i / 24 for i in range(24)],
                                        "long_factor": [1.0 + i for i in range(24)]},
                       "tie_word_embeddings": False}, False),
    # (1 + w) norms, sqrt(hidden) embedding, GeGLU, sandwich norms, q/k norm, query_pre_attn_scalar, sliding
    # layers with their own rope base (full layers: rope_theta + linear scaling), final-logit soft-capping
    "gemma3-all-features": ({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **SHAPE,
                             "head_dim": 32, "query_pre_attn_scalar": 24, "sliding_window": 8,
                             "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                             "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                             "rope_scaling": {"rope_type": "linear", "factor": 4.0}, "final_logit_softcapping": 30.0,
                             "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True}, False),
    # Gemma-2: sandwich and (1 + w) norms, every other layer sliding, attention and final soft-capping (low caps,
    # so that they bite on these random weights), query_pre_attn_scalar
    "gemma2-all-features": ({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", **SHAPE,
                             "head_dim": 16, "query_pre_attn_scalar": 20, "sliding_window": 8,
                             "attn_logit_softcapping": 5.0, "final_logit_softcapping": 10.0, "rope_theta": 10000.0,
                             "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True}, False),
    "mistral-window-8-tf5": ({"architectures": ["MistralForCausalLM"], "model_type": "mistral", **SHAPE,
                              "head_dim": 32, "sliding_window": 8, "hidden_act": "swish", "rope_theta": 1000000.0},
                             True),
}


# The windowed and longrope cases as the NPU tests take them: the static graph attends over its whole context
# (64 positions there) and rotates with longrope's short factors, so an export whose context passes a window or
# the switch is declined; these widen both to 64.
NPU_CASES = {f"{name}-npu": ({**CASES[name][0], **widen}, False) for name, widen in (
    ("qwen3-all-features", {"sliding_window": 64}), ("smollm3-all-features", {"sliding_window": 64}),
    ("gemma3-all-features", {"sliding_window": 64}), ("gemma2-all-features", {"sliding_window": 64}),
    ("phi3-all-features", {"sliding_window": 64}), ("phi3-longrope", {"original_max_position_embeddings": 64}))}


def to_tf5_layout(folder) -> None:
    """Rewrite config.json as transformers >= 5 saves it: rope_theta/rope_scaling -> rope_parameters."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    params = dict(config.pop("rope_scaling", None) or {"rope_type": "default"})
    params["rope_theta"] = config.pop("rope_theta")
    config["rope_parameters"] = params
    path.write_text(json.dumps(config))


def build_case(case: str, base: Path) -> tuple[Path, Path]:
    """(the folder to export, the 4.x-layout folder transformers 4.x reads as the reference)."""
    from edgelm.export.synthetic import build_random

    config, tf5 = {**CASES, **NPU_CASES}[case]
    ref = build_random(config, base / f"{case}-ref", seed=1)
    if not tf5:
        return ref, ref
    src = base / case
    shutil.copytree(ref, src)
    to_tf5_layout(src)
    return src, ref
