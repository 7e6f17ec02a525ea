"""Synthetic presets: published model configs (data) to build with seeded random weights.

`init_range` is the std of the random init: 0.25 for the tiny test models, so that greedy decoding
does not collapse onto one repeated token; the real default (0.02) for the full-size shapes, which exist
to be benchmarked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_QWEN2_BASE = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
}
_LLAMA_BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "attention_bias": False,
    "mlp_bias": False,
}
_QWEN3_BASE = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
}
_SMOLLM3_BASE = {
    "architectures": ["SmolLM3ForCausalLM"],
    "model_type": "smollm3",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "mlp_bias": False,
    "use_sliding_window": False,
}
_GRANITE_BASE = {
    "architectures": ["GraniteForCausalLM"],
    "model_type": "granite",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "attention_bias": False,
    "mlp_bias": False,
}
_PHI3_BASE = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu", "rms_norm_eps": 1e-5}
# Phi-4-mini's published longrope factors (one per rotary frequency: 48 of its 96 rotary dims / 2)
_PHI4_MINI_LONG = [
    1.0, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649, 2.446418898,
    2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845, 5.351743533, 5.984965424,
    6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158, 11.70738129, 13.09260651, 14.64173252,
    16.37415215, 18.31155283, 20.47818807, 22.90118105, 25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6,
    32.61, 32.64, 32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77,
]
_GEMMA3_BASE = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6}
_GEMMA2_BASE = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_activation": "gelu_pytorch_tanh",
                "rms_norm_eps": 1e-6}
_MISTRAL_BASE = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
}


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict[str, Any]
    init_range: float = 0.02
    description: str = ""
    tokenizer_vocab: int = 4096  # size of the offline BPE tokenizer (<= the model's vocab)
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "tiny-qwen2",
            {**_QWEN2_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
             "max_position_embeddings": 512, "rope_theta": 10000.0, "tie_word_embeddings": False},
            init_range=0.25, description="2-layer Qwen2 for tests (untied lm_head)", tokenizer_vocab=512,
        ),
        Preset(
            "tiny-llama",
            {**_LLAMA_BASE, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
             "max_position_embeddings": 512, "rope_theta": 10000.0, "tie_word_embeddings": True},
            init_range=0.25, description="2-layer Llama for tests (tied lm_head)", tokenizer_vocab=512,
        ),
        Preset(
            "tiny-mistral",
            {**_MISTRAL_BASE, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 512, "head_dim": 16,
             "max_position_embeddings": 512, "rope_theta": 10000.0, "sliding_window": None,
             "tie_word_embeddings": False},
            init_range=0.25, description="2-layer Mistral for tests (MQA)", tokenizer_vocab=512,
        ),
        Preset(
            "tiny-qwen3",
            {**_QWEN3_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512,
             "max_position_embeddings": 512, "rope_theta": 1000000.0, "tie_word_embeddings": True},
            init_range=0.25, description="2-layer Qwen3 for tests (q/k norm, head_dim 32 != 64 / 4)",
            tokenizer_vocab=512,
        ),
        Preset(
            "qwen3-0.6b",
            {**_QWEN3_BASE, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
             "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": True,
             "bos_token_id": 151643, "eos_token_id": 151645},
            description="Qwen3-0.6B shape",
        ),
        Preset(
            "qwen3-1.7b",
            {**_QWEN3_BASE, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
             "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": True,
             "bos_token_id": 151643, "eos_token_id": 151645},
            description="Qwen3-1.7B shape",
        ),
        Preset(
            "tiny-smollm3",
            {**_SMOLLM3_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512,
             "rope_theta": 2000000.0, "no_rope_layer_interval": 4, "tie_word_embeddings": True},
            init_range=0.25, description="4-layer SmolLM3 for tests (layer 3 without rotary)", tokenizer_vocab=512,
        ),
        Preset(
            "smollm3-3b",
            {**_SMOLLM3_BASE, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
             "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 128256,
             "max_position_embeddings": 65536, "rope_theta": 5000000.0, "no_rope_layer_interval": 4,
             "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128012},
            description="SmolLM3-3B shape (every 4th layer without rotary)",
        ),
        Preset(
            "tiny-granite",
            {**_GRANITE_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512,
             "rope_theta": 10000000.0, "embedding_multiplier": 12.0, "residual_multiplier": 0.22,
             "attention_multiplier": 0.0625, "logits_scaling": 8.0, "tie_word_embeddings": True},
            init_range=0.25, description="2-layer Granite for tests (all four multipliers)", tokenizer_vocab=512,
        ),
        Preset(
            "granite-3.3-2b",
            {**_GRANITE_BASE, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 40,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 49159,
             "max_position_embeddings": 131072, "rope_theta": 10000000.0, "embedding_multiplier": 12.0,
             "residual_multiplier": 0.22, "attention_multiplier": 0.015625, "logits_scaling": 8.0,
             "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0},
            description="Granite-3.3-2B shape",
        ),
        Preset(
            "tiny-phi3",
            {**_PHI3_BASE, "hidden_size": 128, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 512, "max_position_embeddings": 512, "rope_theta": 10000.0,
             "partial_rotary_factor": 0.75, "sliding_window": 64, "tie_word_embeddings": True,
             # longrope switching to its long factors past position 16: the tests' 32 generated tokens cross it
             "original_max_position_embeddings": 16,
             "rope_scaling": {"type": "longrope", "short_factor": [1.0 + i / 48 for i in range(24)],
                              "long_factor": [1.0 + i / 2 for i in range(24)]}},
            init_range=0.25, description="2-layer Phi-3 for tests (fused weights, rotary on 48 of 64 dims, a window, "
            "longrope switching at 16 positions)",
            tokenizer_vocab=512,
        ),
        Preset(
            "phi-4-mini",
            {**_PHI3_BASE, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 24,
             "num_key_value_heads": 8, "vocab_size": 200064, "max_position_embeddings": 131072,
             "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
             "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": _PHI4_MINI_LONG},
             "sliding_window": 262144, "tie_word_embeddings": True, "bos_token_id": 199999, "eos_token_id": 199999},
            description="Phi-4-mini shape (3.8B: longrope, rotary on 96 of 128 dims, 200k vocabulary)",
        ),
        Preset(
            "phi-3-mini-4k",
            {**_PHI3_BASE, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096, "rope_theta": 10000.0,
             "sliding_window": 2047, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 32000},
            description="Phi-3-mini-4k shape",
        ),
        Preset(
            "tiny-gemma3",
            {**_GEMMA3_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
             "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 512,
             "max_position_embeddings": 512, "query_pre_attn_scalar": 32, "sliding_window": 16,
             "layer_types": ["sliding_attention", "sliding_attention", "full_attention"], "rope_theta": 1000000.0,
             "rope_local_base_freq": 10000.0, "tie_word_embeddings": True},
            init_range=0.25, description="3-layer Gemma-3 for tests (sliding + full layers, own rope bases)",
            tokenizer_vocab=512,
        ),
        Preset(
            "gemma-3-1b",
            {**_GEMMA3_BASE, "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
             "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
             "max_position_embeddings": 32768, "query_pre_attn_scalar": 256, "sliding_window": 512,
             "sliding_window_pattern": 6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
             "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1},
            description="Gemma-3-1B shape (text)",
        ),
        Preset(
            "tiny-gemma2",
            {**_GEMMA2_BASE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
             "max_position_embeddings": 512, "query_pre_attn_scalar": 16, "sliding_window": 16,
             "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "rope_theta": 10000.0,
             "tie_word_embeddings": True},
            init_range=0.25, description="2-layer Gemma-2 for tests (soft-capping, a sliding and a full layer)",
            tokenizer_vocab=512,
        ),
        Preset(
            "gemma-2-2b",
            {**_GEMMA2_BASE, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
             "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000,
             "max_position_embeddings": 8192, "query_pre_attn_scalar": 256, "sliding_window": 4096,
             "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "rope_theta": 10000.0,
             "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1},
            description="Gemma-2-2B shape",
        ),
        Preset(
            "qwen2.5-0.5b",
            {**_QWEN2_BASE, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
             "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": True,
             "bos_token_id": 151643, "eos_token_id": 151645},
            description="Qwen2.5-0.5B-Instruct shape",
        ),
        Preset(
            "deepseek-r1-distill-qwen-1.5b",
            {**_QWEN2_BASE, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
             "max_position_embeddings": 131072, "rope_theta": 10000.0, "tie_word_embeddings": False,
             "bos_token_id": 151646, "eos_token_id": 151643},
            description="DeepSeek-R1-Distill-Qwen-1.5B shape (the reference model)",
        ),
        Preset(
            "smollm2-135m",
            {**_LLAMA_BASE, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
             "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
             "max_position_embeddings": 8192, "rope_theta": 100000.0, "tie_word_embeddings": True,
             "bos_token_id": 1, "eos_token_id": 2},
            description="SmolLM2-135M shape",
        ),
        Preset(
            "llama-3.2-1b",
            {**_LLAMA_BASE, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "head_dim": 64,
             "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": True,
             "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
             "bos_token_id": 128000, "eos_token_id": 128009},
            description="Llama-3.2-1B shape",
        ),
    ]
}
