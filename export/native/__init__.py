"""The native builder: safetensors -> a fused ONNX decoder, written weight by weight (no torch).

Fused ONNX Runtime contrib ops: GroupQueryAttention (rotary inside), MatMulNBits (int4/int8),
SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization, the config's activation (QuickGelu as SiLU,
Gelu, FastGelu), and an lm_head that
only computes the positions whose logits are asked for.
"""
