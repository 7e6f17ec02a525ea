"""The native builder's parts: MatMulNBits packing checked against onnxruntime's kernel, the torch-free
safetensors reader, the fused graph it emits, and the backend choice."""

import numpy as np
import onnx
import pytest

from edgelm.errors import ExportError
from edgelm.export import ExportConfig, export_model
from edgelm.export.native.quant import dequantize, quantize_blockwise
from edgelm.export.native.weights import SafetensorsReader


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmulnbits_layout_matches_onnxruntime(bits, symmetric):
    """onnxruntime's MatMulNBits on our packed codes equals x @ dequantize(codes).T in numpy."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n, k, block = 24, 80, 32  # K not a multiple of the block: padding is exercised
    weight = rng.standard_normal((n, k)).astype(np.float32)
    q = quantize_blockwise(weight, bits, block, symmetric)
    inits = [numpy_helper.from_array(q.codes, "B"), numpy_helper.from_array(q.scales, "scales")]
    inputs = ["x", "B", "scales"]
    if q.zero_points is not None:
        inits.append(numpy_helper.from_array(q.zero_points, "zp"))
        inputs.append("zp")
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    x = rng.standard_normal((3, k)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    deq = dequantize(q, bits, block)
    assert np.abs(got - x @ deq.T).max() < 1e-3
    # and the quantization itself is close: relative error of the weights
    bound = {4: 0.12, 8: 0.01}[bits]
    assert np.abs(deq - weight).mean() / np.abs(weight).mean() < bound


def test_safetensors_reader_matches_torch_for_bf16_and_fp16(tmp_path):
    import torch
    from safetensors.torch import save_file

    tensors = {"a": torch.randn(4, 6, dtype=torch.bfloat16), "b": torch.randn(3, dtype=torch.float16),
               "c": torch.randn(2, 2)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    reader = SafetensorsReader(tmp_path)
    for name, t in tensors.items():
        assert np.array_equal(reader.get(name), t.float().numpy())


def test_native_graph_is_fused(builds):
    package = builds.package("tiny-qwen2", "int4", "native")
    ops = {}
    for node in onnx.load(str(package / "model.onnx"), load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    assert ops["GroupQueryAttention"] == 2 and ops["MatMulNBits"] == 2 * 4 + 1  # qkv, o, gate_up, down; lm_head
    assert ops["GatherBlockQuantized"] == 1 and "Gather" not in ops  # the embedding table is int4 too
    assert ops["SkipSimplifiedLayerNormalization"] == 4 and ops["SimplifiedLayerNormalization"] == 1
    assert sum(ops.values()) < 60  # vs ~300 nodes from the optimum path for the same model
    assert "Where" not in ops and "Range" not in ops


def test_tied_lm_head_shares_the_quantized_embedding(builds):
    """tiny-llama ties lm_head to the embedding: one copy of the codes serves both."""
    graph = onnx.load(str(builds.package("tiny-llama", "int4", "native") / "model.onnx"), load_external_data=False).graph
    head = next(n for n in graph.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head"))
    assert head.input[1] == "/model/embed_tokens.qweight"
    assert not any(t.name.startswith("/lm_head") and t.name.endswith("qweight") for t in graph.initializer)


def test_backend_choice(builds, tmp_path):
    from types import SimpleNamespace

    from edgelm.export.pipeline import choose_backend
    from edgelm.export.quantize import get_mode

    fp16 = export_model(builds.hf("tiny-llama"), tmp_path / "fp16", ExportConfig(quant="fp16", progress=False))
    assert fp16.source["backend"] == "native" and fp16.kv_cache.dtype == "float16"
    # an architecture the native builder does not know: auto falls back, asking for native is an error
    from edgelm.export.arch import get_arch

    foreign = SimpleNamespace(arch=get_arch({"architectures": ["GPT2LMHeadModel"], "n_layer": 2}, foreign=True))
    assert choose_backend("auto", foreign, get_mode("int4")) == \
        ("optimum", "architectures='GPT2LMHeadModel': no native builder for this architecture")
    with pytest.raises(ExportError, match="native builder declines GPT2LMHeadModel: .*no native builder"):
        choose_backend("native", foreign, get_mode("int4"))


def test_packed_and_separate_gate_up_give_the_same_logits(builds, tmp_path):
    """LinearFormat.pack_mlp only changes how the MLP's first linears are laid out, not what they compute."""
    from edgelm.export.native.decoder import DecoderBuilder, LinearFormat
    from edgelm.export.source import open_source
    import onnxruntime as ort

    source = open_source(builds.hf("tiny-llama"))
    ids = np.array([[5, 9, 11, 30]], dtype=np.int64)
    outs = []
    for packed in (True, False):
        folder = tmp_path / str(packed)
        folder.mkdir()
        builder = DecoderBuilder(source.arch, SafetensorsReader(source.path), folder, "model.onnx",
                                 LinearFormat(None, pack_mlp=packed))
        path, _ = builder.build()
        session = ort.InferenceSession(str(path))
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, 4), np.int64), "num_logits_to_keep": np.array(4)}
        for i in range(source.arch.num_layers):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, source.arch.num_kv_heads, 0, source.arch.head_dim),
                                                               np.float32)
        outs.append(session.run(["logits"], feeds)[0])
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
