"""Right or refused: every config field the native builder reads is built exactly, every other one is declined
by name (and optimum exports it under --backend auto), and architectures without a spec go to optimum.

The models are transformers' own classes saved with `save_pretrained`, with every tensor random (biases and
norm gains included: `build_random`), so no optional feature hides behind a zero bias or a unit gain. The
reference is transformers' full model loaded by `from_pretrained` (not the self-check's layer-streamed
one), from the 4.x-layout folder even where the exported folder was rewritten to the 5.x layout.
Measured (fp32 native vs torch): max |logit diff| 3e-5 to 5e-5 over 37 + 32 positions, 32/32 greedy tokens.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings

import numpy as np
import pytest

from edgelm.errors import ExportError
from edgelm.export import ExportConfig, export_model, registered_architectures
from edgelm.export.synthetic import build_random
from tests.export.contract_cases import CASES, SHAPE
from edgelm.runtime import load

PROMPT = "The capital of France is Paris, a city on the river"
@pytest.fixture
def sources(builds):
    """case -> (exported folder, 4.x-layout reference folder), built once per session."""
    return builds.case


def _torch(ref):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32, attn_implementation="eager").eval()
    model.generation_config.eos_token_id = None  # 32 tokens, EOS or not (as ignore_eos)
    return model


def test_every_registered_architecture_has_an_all_features_case():
    covered = {config["architectures"][0] for config, _ in CASES.values()}
    assert set(registered_architectures()) <= covered


@pytest.mark.parametrize("case", list(CASES))
def test_native_fp32_matches_torch_with_every_feature_on(sources, tmp_path, case):
    import torch

    src, ref = sources(case)
    manifest = export_model(src, tmp_path / "pkg", ExportConfig(quant="fp32", backend="native", progress=False))
    assert manifest.quality.verdict == "pass" and manifest.quality.max_abs_logit_diff < 1e-3
    model, hf = load(tmp_path / "pkg"), _torch(ref)
    ids = model.tokenizer.encode(PROMPT)
    with torch.no_grad():
        greedy = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=32, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
        want = hf(torch.tensor([ids + greedy])).logits[0].numpy()
    got = model.decoder.forward(ids + greedy, last_only=False)
    assert len(ids) + 32 > 8 * 2  # longer than the windows of the windowed cases
    assert np.abs(got - want).max() < 1e-3
    assert list(model.stream_ids(ids, max_new_tokens=32, ignore_eos=True, temperature=0.0)) == greedy


@pytest.mark.parametrize("case", ["llama-all-features", "qwen2-window-from-layer-1", "qwen3-all-features",
                                  "smollm3-all-features", "granite-all-features", "phi3-all-features",
                                  "gemma3-all-features"])
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_packages_record_their_agreement(sources, tmp_path, case, quant):
    """int8/int4 (awq on int4: its calibration forward runs every feature too) carry the measured figures.
    Measured on these random models: int8 top-1 0.92-0.95, int4 0.25-0.33 (std 0.25 weights round badly)."""
    src, _ = sources(case)
    with _quiet():  # int4 on these random models warns (QualityWarning): expected
        manifest = export_model(src, tmp_path / "pkg", ExportConfig(quant=quant, progress=False))
    q = manifest.quality
    assert manifest.source["backend"] == "native" and q.tolerance is None and q.positions > 200
    assert q.top1 >= {"int8": 0.85, "int4": 0.2}[quant] and q.kl > 0
    assert load(tmp_path / "pkg").manifest.quality == q


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("field,value,named", [
    ("hidden_act", "relu", "hidden_act='relu'"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}, "yarn"),
    ("foo_scale", 2.0, "foo_scale"),
])
def test_declined_field_is_named_and_optimum_exports_it(sources, tmp_path, field, value, named):
    from edgelm.export.pipeline import BackendFallback

    _, ref = sources("llama-all-features")
    src = tmp_path / "src"
    shutil.copytree(ref, src)
    config = json.loads((src / "config.json").read_text())
    config[field] = value
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=f"native builder declines LlamaForCausalLM: .*{named}"):
        export_model(src, tmp_path / "native", ExportConfig(quant="fp32", backend="native", progress=False))
    assert not (tmp_path / "native").exists()
    if field == "foo_scale":
        return  # transformers itself ignores an unknown key; the point was the refusal
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = export_model(src, tmp_path / "auto", ExportConfig(quant="fp32", progress=False))
    assert any(issubclass(w.category, BackendFallback) and named in str(w.message) for w in caught)
    assert manifest.source["backend"] == "optimum" and named in manifest.source["backend_reason"]
    assert manifest.quality.verdict == "pass" and manifest.quality.greedy_agreed == manifest.quality.greedy_total


def test_checkpoint_tensor_the_spec_would_not_read_is_declined(sources, tmp_path):
    """A bias the config does not switch on (transformers would drop it; so would we, silently): refused."""
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(sources("qwen2-tf5")[1], src)
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(64, np.float32)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match="o_proj.bias would not be read"):
        export_model(src, tmp_path / "pkg", ExportConfig(quant="fp32", backend="native", progress=False))


def test_self_check_fails_a_wrong_float_export_and_writes_nothing(sources, tmp_path, monkeypatch):
    """Plant the bug issue 11 found (o_proj's bias dropped) in the builder, where the contract cannot see it:
    the self-check fails the export, and the old output survives."""
    from edgelm.export.native.decoder import DecoderBuilder

    real = DecoderBuilder._maybe
    monkeypatch.setattr(DecoderBuilder, "_maybe", lambda self, role, i: None if role == "o_bias" else real(self, role, i))
    out = tmp_path / "pkg"
    export_model(sources("qwen2-tf5")[0], out, ExportConfig(quant="fp32", progress=False))  # an older package
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError, match="self-check failed: the fp32 package differs"):
        export_model(sources("llama-all-features")[0], out, ExportConfig(quant="fp32", progress=False, force=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_min_agreement_fails_a_quantized_export(sources, tmp_path):
    with pytest.raises(ExportError, match="below --min-agreement 0.99; nothing was written"):
        export_model(sources("qwen2-tf5")[0], tmp_path / "pkg",
                     ExportConfig(quant="int4", progress=False, min_agreement=0.99))
    assert not (tmp_path / "pkg").exists()


# Architectures without a spec: optimum exports them under the default --backend auto.
FOREIGN = {
    "GPT2LMHeadModel": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 512,
                        "n_positions": 256},
}


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    base, cache = tmp_path_factory.mktemp("foreign"), {}

    def get(name):
        if name not in cache:
            cache[name] = build_random({"architectures": [name], **FOREIGN[name]}, base / name, seed=2)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(FOREIGN))
def test_foreign_architecture_exports_with_optimum_and_matches_torch(foreign, tmp_path, name):
    import torch

    manifest = export_model(foreign(name), tmp_path / "fp32", ExportConfig(quant="fp32", progress=False))
    assert manifest.source["backend"] == "optimum" and "no native builder" in manifest.source["backend_reason"]
    model, hf = load(tmp_path / "fp32"), _torch(foreign(name))
    ids = model.tokenizer.encode(PROMPT)
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(model.decoder.forward(ids, last_only=False) - want).max() < 1e-3
    assert manifest.quality.verdict == "pass" and manifest.quality.greedy_agreed == manifest.quality.greedy_total


@pytest.mark.parametrize("quant", ["int4", "int8"])
@pytest.mark.parametrize("name", ["GPT2LMHeadModel"])
def test_foreign_architecture_quantized_records_agreement(foreign, tmp_path, name, quant):
    """GPT-2's Conv1D linears export as Gemm and are quantized too (MatMulNBits, no Gemm left). Measured on
    these random models: top-1 0.3-0.7 (int4), 0.9+ (int8)."""
    import onnx

    with _quiet():
        manifest = export_model(foreign(name), tmp_path / quant, ExportConfig(quant=quant, progress=False))
    ops = {n.op_type for n in onnx.load(str(tmp_path / quant / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "Gemm" not in ops
    q = manifest.quality
    assert q.kl > 0 and q.top1 >= {"int4": 0.25, "int8": 0.85}[quant] and q.tolerance is None


def test_default_cli_export_of_a_foreign_architecture_says_why_and_what_it_measured(foreign, tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("export", foreign("GPT2LMHeadModel"), "-o", tmp_path / "pkg", "-q", check=True)
    assert "optimum, because the native builder declines: architectures='GPT2LMHeadModel'" in proc.stdout
    assert "self-check: " in proc.stdout and "top-1" in proc.stdout
    info = run_cli("info", tmp_path / "pkg", check=True).stdout
    assert "self-check   " in info and "optimum builder" in info and "no native builder" in info


@pytest.mark.parametrize("extra,named", [
    ({"model_type": "mistral"}, "model_type='mistral'"),
    ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config"),
    ({"rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}},
     "per-layer-type rope"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs low_freq_factor"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0, "attention_factor": 0.5}}, "attention_factor"),
    ({"head_dim": 15}, "positive even head_dim"),
    ({"layer_types": ["chunked_attention"] * 3}, "layer types"),
])
def test_spec_declines_what_it_does_not_implement(extra, named):
    from edgelm.export.arch import get_arch

    arch, model_type = ("Qwen2ForCausalLM", "qwen2") if "layer_types" in extra else ("LlamaForCausalLM", "llama")
    config = {"architectures": [arch], "model_type": model_type, **SHAPE, **extra}
    declined = "; ".join(map(str, get_arch(config).declined()))
    assert named in declined, declined
    assert not get_arch({**config, **{k: None for k in extra if k != "model_type"},
                         "model_type": get_arch(config).model_type}).declined()


@pytest.mark.parametrize("preset,context,named", [
    ("tiny-phi3", 32, "--context 32 passes the length where longrope switches to its long factors \\(16\\)"),
    ("tiny-gemma3", 32, "--context 32 exceeds the model's attention window 16"),
])
def test_the_npu_target_declines_a_context_its_static_graph_would_compute_wrongly(builds, tmp_path, preset, context,
                                                                                   named):
    """The static graph attends over its whole context and rotates with longrope's short factors: a context past
    a window or past longrope's switch is refused at once, by name, and nothing is written."""
    from edgelm.export.config import NpuConfig

    config = ExportConfig(target="npu-qnn", npu=NpuConfig(context=context, chunk=8), progress=False)
    with pytest.raises(ExportError, match=named):
        export_model(builds.hf(preset), tmp_path / "npu", config)
    assert not (tmp_path / "npu").exists()


def test_phi3_partial_rotary_that_groupqueryattention_cannot_take_is_declined(tmp_path):
    """GroupQueryAttention turns partial rotary in multiples of 16 dims: 0.75 x 32 = 24 is declined by name (and
    optimum exports it), 0.75 x 64 = 48 is built (the phi3-all-features case)."""
    from edgelm.export.arch import get_arch
    from tests.export.contract_cases import CASES

    config = {**CASES["phi3-all-features"][0], "head_dim": 32}
    declined = get_arch(config).declined()
    assert [d.field for d in declined] == ["partial_rotary_factor"] and "multiples of 16" in str(declined[0])
    assert get_arch(CASES["phi3-all-features"][0]).declined() == []


def test_awq_asked_for_fused_weights_is_refused_and_auto_rounds_plainly(sources, tmp_path):
    """The awq forward reads q/k/v and gate/up apart; Phi-3 stores them fused: --calibration awq is refused by
    name, the default (auto) quantizes int4 with plain rounding and the manifest says no calibration ran."""
    from edgelm.export import QuantConfig

    src, _ = sources("phi3-all-features")
    with pytest.raises(ExportError, match="--calibration awq is not built for Phi3ForCausalLM's fused weights"):
        export_model(src, tmp_path / "awq", ExportConfig(quant="int4", quant_config=QuantConfig(calibration="awq"),
                                                         progress=False))
    manifest = export_model(src, tmp_path / "auto", ExportConfig(quant="int4", progress=False))
    assert manifest.quantization.calibration is None and not (tmp_path / "awq").exists()


@pytest.mark.parametrize("case, field, value", [
    ("smollm3-all-features", "no_rope_layer_interval", 0), ("granite-all-features", "logits_scaling", "8"),
])
def test_new_family_scalars_are_checked(case, field, value):
    """A value the builder would compute with wrongly (or crash on) is declined by name, so optimum exports it."""
    from edgelm.export.arch import get_arch
    from tests.export.contract_cases import CASES

    config = {k: v for k, v in CASES[case][0].items() if k != "no_rope_layers"}
    assert [d.field for d in get_arch({**config, field: value}).declined()] == [field]


@pytest.mark.parametrize("scaling,named", [
    ({"short_factor": [1.0] * 23}, "rope_scaling.short_factor='23 factors': expected 24"),
    ({"attention_factor": 1.2}, "longrope setting(s) attention_factor not implemented"),
    ({"long_factor": [0.0] * 24}, "needs long_factor as lists of positive numbers"),
    ({"type": "yarn", "factor": 2.0}, "rope type 'yarn' is not implemented"),
])
def test_phi3_longrope_contract(scaling, named):
    """longrope is built as transformers' Phi3Config takes it (type, short_factor, long_factor: one factor per
    rotary frequency; "su" is the old name); anything else is declined by name."""
    from edgelm.export.arch import get_arch

    base = CASES["phi3-longrope"][0]
    declined = "; ".join(map(str, get_arch({**base, "rope_scaling": {**base["rope_scaling"], **scaling}}).declined()))
    assert named in declined, declined
    su = get_arch({**base, "rope_scaling": {**base["rope_scaling"], "type": "su"}})
    assert su.declined() == [] and su.rope_switch == 16


@pytest.mark.parametrize("case", ["gemma2-all-features", "granite-all-features"])  # tied (scaled embedding), untied
def test_the_reference_streams_the_vocabulary_tables_and_equals_the_whole_model(sources, case):
    """The self-check's reference never holds a vocabulary table whole (the embedding gets the rows of its ids,
    the lm_head runs by slices) and computes what transformers' whole model computes."""
    import torch

    from edgelm.export.reference import StreamedReference

    src, ref = sources(case)
    seqs = [list(range(3, 40)), list(range(100, 120))]
    streamed = StreamedReference(src)
    got = streamed.logits(seqs)
    assert streamed.streamed  # no fallback to holding every weight
    with torch.no_grad():
        want = [_torch(ref)(torch.tensor([s])).logits[0].numpy() for s in seqs]
    assert all(np.abs(g - w).max() < 1e-4 for g, w in zip(got, want))
