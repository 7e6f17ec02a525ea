"""Issue 28's byte savings and the vocabulary table's rounding, against references built here.

Scales: every quantizer chooses float16 values before it rounds a code against them, so a float32 package stores
them in 2 bytes (a Cast the session folds at load) with nothing lost; a scale float16 cannot hold keeps the
tensor's scales float32. The tied table: GPTQ against the lm_head's inputs' second moments, which the test
computes itself with transformers (the final norm's output on the export's own calibration windows)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgelm.export import ExportConfig, export_model
from edgelm.export.native.gptq import gptq, quantize_weighted, search_scales
from edgelm.export.native.quant import dequantize, half_exact, half_storable, quantize_blockwise


def _is_half(values) -> bool:
    values = np.asarray(values, np.float32)
    return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_every_quantizer_chooses_float16_scales(bits, symmetric):
    rng = np.random.default_rng(0)
    w = (0.05 * rng.standard_normal((24, 96))).astype(np.float32)
    x = rng.standard_normal((256, 96))
    h = x.T @ x
    for q in (quantize_blockwise(w, bits, 32, symmetric), gptq(w, h, bits, 32, symmetric),
              quantize_weighted(w, np.diag(h).astype(np.float32), bits, 32, symmetric)):
        assert _is_half(q.scales) and half_storable(q.scales)
    assert _is_half(search_scales(w[:, :32], None, bits, symmetric)[0])


def test_scales_float16_cannot_hold_stay_float32():
    tiny = np.array([3e-6, 1e-9, 0.02, 7e4], np.float32)  # subnormal, subnormal, normal, over float16's max
    got = half_exact(tiny)
    assert got[2] == np.float32(np.float16(0.02))
    assert got[0] == tiny[0] and got[1] == tiny[1] and got[3] == tiny[3]
    assert not half_storable(got) and half_storable(got[2:3])
    # a weight of tiny values: its scales are kept, and dequantize to the weight as closely as normal ones do
    w = (1e-7 * np.random.default_rng(1).standard_normal((8, 64))).astype(np.float32)
    q = quantize_blockwise(w, 8, 32, True)
    assert not half_storable(q.scales)
    assert np.abs(dequantize(q, 8, 32) - w).max() <= np.abs(w).max() / 100


def _matmul_nbits_inputs(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(node name, what feeds its scales: 'float16 cast' | 'float32') for every MatMulNBits."""
    producers = {out: n for n in model.graph.node for out in n.output}
    types = {t.name: t.data_type for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        scales = node.input[2]
        cast = producers.get(scales)
        if cast is not None and cast.op_type == "Cast" and types.get(cast.input[0]) == onnx.TensorProto.FLOAT16:
            found.append((node.name, "float16 cast"))
        else:
            found.append((node.name, "float16" if types.get(scales) == onnx.TensorProto.FLOAT16 else "float32"))
    return found


def test_a_float32_package_stores_its_scales_in_two_bytes(builds):
    """Every linear of an int4 package reads float16 scales through a Cast (the session folds it: measured on
    a 1536 x 8960 MatMulNBits, same speed); the package's own self-check against its source passed at export."""
    package = builds.package("tiny-qwen2", "int4", "native")
    model = onnx.load(str(package / "model.onnx"), load_external_data=False)
    feeds = _matmul_nbits_inputs(model)
    assert feeds and all(kind == "float16 cast" for _, kind in feeds), feeds


def test_the_tied_table_is_rounded_against_the_lm_heads_inputs(builds, tmp_path):
    """The compact tier's int4 table (embedding and tied lm_head): its codes are GPTQ of the table against the
    second moments of the lm_head's inputs, computed here with transformers on the export's own calibration
    windows; they beat the unweighted scale search on that objective."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgelm.export.calibration import calibration_windows
    from edgelm.export.config import QuantConfig
    from edgelm.export.native.awq import WINDOW
    from edgelm.export.native.gptq import searched_row_slices
    from edgelm.export.source import open_source

    hf = builds.hf("tiny-llama")
    m = export_model(hf, tmp_path / "p", ExportConfig(quant="int4-gptq-compact", progress=False, check=False))
    table_rounding = {x.name: x.rounding for x in m.quantization.linears}
    assert table_rounding.get("/model/embed_tokens") == "gptq", table_rounding
    model = onnx.load(str(tmp_path / "p" / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    got = numpy_helper.to_array(inits["/model/embed_tokens.qweight"])

    windows = calibration_windows(open_source(hf), QuantConfig().gptq_samples, WINDOW, wide=True)
    ref = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        x = ref.model(torch.tensor(windows)).last_hidden_state.reshape(-1, ref.config.hidden_size).double()
    h = (x.T @ x).numpy()
    table = ref.get_input_embeddings().weight.detach().numpy()
    want = gptq(table, h, 4, 32, False)
    codes = lambda c: np.stack([c & 15, c >> 4], -1).reshape(len(c), -1)  # noqa: E731
    agree = np.mean(codes(got.reshape(len(table), -1)) == codes(want.codes.reshape(len(table), -1)))
    assert agree >= 0.99, agree  # float32 forward here vs numpy's there may move a code on a boundary

    def weighted(q):
        d = dequantize(q, 4, 32).astype(np.float64) - table
        return float(np.einsum("ij,jk,ik->", d, h, d))

    plain = searched_row_slices(lambda i, j: table[i:j], *table.shape, 4, 32, False)
    assert weighted(want) < 0.9 * weighted(plain)  # measured 0.82x (random weights: near-isotropic inputs)


def test_layer_sets_scale_with_depth():
    from edgelm.export.native.precision import late_layers, outer_layers, spread_layers

    assert sorted(outer_layers(30)) == [0, 1, 2, 3, 26, 27, 28, 29]
    assert sorted(late_layers(30)) == [0, 1, 2, 3, *range(15, 30)]
    assert sorted(spread_layers(30)) == [0, 1, 2, 3, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    assert sorted(outer_layers(28)) == [0, 1, 2, 3, 24, 25, 26, 27]
    assert sorted(outer_layers(1)) == [0] and sorted(spread_layers(2)) == [0, 1]


def test_the_precision_table_is_recorded_and_honoured(builds, tmp_path):
    """Every linear's bits and block in the manifest are the table's for its role and layer, and the graph's
    MatMulNBits nodes carry exactly those (qkv int8 in late layers, down int8 in outer ones, the rest int4)."""
    from edgelm.export.native.precision import precision_table

    hf = builds.hf("tiny-qwen2")  # untied: its lm_head is a linear of its own, rounded against its inputs
    m = export_model(hf, tmp_path / "p", ExportConfig(quant="int4-gptq", progress=False, check=False))
    table = precision_table("int4-gptq", 4, None, 2)
    recorded = {x.name: x for x in m.quantization.linears}
    model = onnx.load(str(tmp_path / "p" / "model.onnx"), load_external_data=False)
    nodes = {n.name.rsplit("/MatMulNBits", 1)[0]: {a.name: a.i for a in n.attribute}
             for n in model.graph.node if n.op_type == "MatMulNBits"}
    assert set(nodes) == set(recorded) - {"/model/embed_tokens"} or set(nodes) == set(recorded)
    for name, attrs in nodes.items():
        want = table.choose(name)
        assert (recorded[name].bits, recorded[name].block_size) == (want.bits, want.block), name
        assert (attrs["bits"], attrs["block_size"]) == (want.bits, want.block), name
        assert recorded[name].rounding == "gptq", name
    assert {x.bits for x in recorded.values()} == {4, 8}


def test_the_self_check_records_kld_scored_as_llama_perplexity_does(builds, tmp_path):
    """export --kld: the manifest's figure equals `edgelm eval --kld` of the same package against the fp32
    package of the same source (which matches transformers to ~1e-5 here), and `edgelm info` shows it;
    with --no-check, and for npu-qnn packages, it is refused, nothing written."""
    from edgelm.bench.divergence import kld_table
    from edgelm.errors import ExportError
    from edgelm.info import describe_package

    hf = builds.hf("tiny-llama")
    with pytest.raises(ExportError, match="--kld is scored by the self-check"):
        export_model(hf, tmp_path / "no", ExportConfig(quant="int4", progress=False, check=False, kld=True))
    assert not (tmp_path / "no").exists()
    with pytest.raises(ExportError, match="--kld is built for --target cpu and gpu packages"):
        export_model(hf, tmp_path / "npu", ExportConfig(target="npu-qnn", progress=False, kld=True))
    assert not (tmp_path / "npu").exists()
    m = export_model(hf, tmp_path / "p", ExportConfig(quant="int4", progress=False, kld=True))
    got = m.quality.llama_kld
    (_, _, want), = kld_table(builds.package("tiny-llama", "fp32", "native"), [tmp_path / "p"])
    assert got.positions == want.positions and got.chunks == want.chunks and got.n_ctx == 256
    assert got.kld > 0.01 and abs(got.kld - want.kld) <= 1e-3 * want.kld + 1e-5, (got, want)
    assert abs(got.same_top - want.same_top) <= 2 / want.positions
    assert f"KLD        {got.kld:.4g}" in describe_package(str(tmp_path / "p"))
