"""Activation-aware scaling (export/native/awq.py): the calibration forward is the model, the scaling is
exact in float, and on the trained SmolLM2 it brings int4 closer to float than plain rounding.

Measured on this machine (SmolLM2-135M, teacher-forced over the four chat prompts below + 32 greedy
tokens each, against the fp32 package): mean KL divergence of the next-token distribution 0.281 for
the default int4 (awq, zero points, block 32 with the MLP at 128) vs 0.479 for plain rounding at the same
settings (0.59x; earlier, against plain rounding at block 32 without zero points, genai's builder default:
0.284 vs 0.544). The bound (0.75x) asks awq to stay clearly ahead of its own settings without the scaling.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import edgelm.export.native.awq as awq
from edgelm.bench.quality import log_softmax
from edgelm.errors import ExportError, QuantizationError
from edgelm.export import ExportConfig, QuantConfig, export_model
from edgelm.export.calibration import calibration_windows
from edgelm.export.native.decoder import NATIVE_IO, DecoderBuilder, LinearFormat
from edgelm.export.native.weights import SafetensorsReader
from edgelm.export.source import open_source
from edgelm.manifest import Manifest
from edgelm.runtime import load
from tests.conftest import run_cli
from tests.export.contract_cases import CASES

PRESETS = ["tiny-qwen2", "tiny-llama", "tiny-mistral"]
CONTRACT_CASES = ["llama-all-features", "llama-linear-rope-gelu", "qwen2-window-from-layer-1"]


def _folder(builds, preset: str):
    """A tiny preset, or a config-contract case (every optional feature on, every tensor random)."""
    return builds.case(preset)[1] if preset in CASES else builds.hf(preset)


@pytest.mark.parametrize("preset", PRESETS + CONTRACT_CASES)
def test_calibration_forward_matches_torch(builds, preset):
    """Layer by layer, the numpy forward reproduces transformers' hidden states."""
    import torch
    from transformers import AutoModelForCausalLM

    source = open_source(_folder(builds, preset))
    windows = calibration_windows(source, 2, 24)
    reader, arch = SafetensorsReader(source.path), source.arch
    forward = awq.CalibrationForward(arch, reader.get(arch.tensor("embed")), windows)
    model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = model(torch.tensor(windows), output_hidden_states=True).hidden_states
    for layer in range(arch.num_layers - 1):  # the last entry of hidden_states is after the final norm
        forward.layer({role: reader.get(arch.tensor(role, layer)) if arch.uses(role) else None
                       for role in awq.LAYER_ROLES}, layer)
        want = hidden[layer + 1].numpy()
        assert np.abs(forward.h - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def _logits(graph, arch, ids) -> np.ndarray:
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    kv = arch.kv_cache()
    empty = np.zeros((1, kv.num_kv_heads, 0, kv.head_dim), np.float32)
    feeds = {NATIVE_IO.input_ids: np.array([ids]), NATIVE_IO.attention_mask: np.ones((1, len(ids)), np.int64),
             NATIVE_IO.logits_to_keep: np.array(len(ids)),
             **{n: empty for layer in range(arch.num_layers) for n in NATIVE_IO.past_names(layer)}}
    return session.run([NATIVE_IO.logits], feeds)[0][0]


@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-llama"] + CONTRACT_CASES)
def test_scaling_is_exact_in_float(builds, tmp_path, monkeypatch, preset):
    """Weights scaled by the awq reader (alpha forced to 0.5, so every scale differs from 1), built in fp32:
    the graph computes the same logits as the unscaled one."""
    monkeypatch.setattr(awq, "ALPHAS", (0.5,))
    source = open_source(_folder(builds, preset))
    arch, ids = source.arch, list(range(3, 40))
    graphs = []
    for name, scaled in (("plain", False), ("scaled", True)):
        reader = SafetensorsReader(source.path)
        if scaled:
            reader = awq.AwqReader(reader, arch, calibration_windows(source, 2, 32), LinearFormat(4, 16, False))
        folder = tmp_path / name
        folder.mkdir()
        builder = DecoderBuilder(arch, reader, folder, "model.onnx", LinearFormat(None))
        graphs.append(builder.build()[0])
        builder.g.close()
    scales_moved = [np.ptp(t) > 0.1 for n, t in reader.current.items() if n.endswith("input_layernorm.weight")]
    assert reader.alphas and set(reader.alphas.values()) == {0.5} and all(scales_moved)
    plain, scaled = (_logits(g, arch, ids) for g in graphs)
    assert np.abs(plain - scaled).max() < 1e-3 * max(1.0, np.abs(plain).max())


def test_int4_awq_is_closer_to_float_than_plain_rounding(builds, tmp_path):
    from tests.test_smollm2 import PROMPTS

    fp32 = load(builds.package("smollm2", "fp32"))
    default = load(builds.package("smollm2", "int4"))
    plain_path = tmp_path / "rtn-same-settings"
    plain_cfg = QuantConfig(calibration="none")  # identical settings but the scaling: only awq's gain is measured
    export_model(builds.smollm2_hf(), plain_path, ExportConfig(quant="int4", quant_config=plain_cfg, progress=False,
                                                                check=False))  # measured below, not by the check
    plain = load(plain_path)
    assert default.manifest.quantization.calibration.startswith("awq")
    q = default.manifest.quantization
    assert (q.block_size, q.mlp_block_size, q.symmetric) == (32, 128, False)
    assert plain.manifest.quantization.calibration is None
    p = plain.manifest.quantization
    assert (p.block_size, p.mlp_block_size, p.symmetric, p.accuracy_level) == (32, 128, False, q.accuracy_level)
    kl = {"awq": [], "plain": []}
    for text in PROMPTS:
        ids = fp32.encode_prompt(text, chat=True)
        seq = ids + list(fp32.stream_ids(ids, max_new_tokens=32, ignore_eos=True))
        fp32.decoder.reset()
        ref = log_softmax(fp32.decoder.forward(seq, last_only=False))
        for name, model in (("awq", default), ("plain", plain)):
            model.decoder.reset()
            got = log_softmax(model.decoder.forward(seq, last_only=False))
            kl[name].append((np.exp(ref) * (ref - got)).sum(-1)[len(ids) - 1:])
    mean = {k: float(np.concatenate(v).mean()) for k, v in kl.items()}
    print(f"smollm2 int4 mean KL vs fp32 (block 32, MLP 128, zero points): awq {mean['awq']:.3f}, "
          f"plain rounding {mean['plain']:.3f}")
    assert mean["awq"] < 0.75 * mean["plain"]


def test_calibration_options_are_checked(builds, tmp_path):
    with pytest.raises(QuantizationError, match="unknown calibration"):
        export_model(builds.hf("tiny-qwen2"), tmp_path / "a", ExportConfig(quant_config=QuantConfig(calibration="magic")))
    with pytest.raises(QuantizationError, match="mlp_block_size must be a power of two"):
        export_model(builds.hf("tiny-qwen2"), tmp_path / "a", ExportConfig(quant_config=QuantConfig(mlp_block_size=48)))
    with pytest.raises(QuantizationError, match="block_size must be a power of two, at least 16"):
        export_model(builds.hf("tiny-qwen2"), tmp_path / "a", ExportConfig(quant_config=QuantConfig(block_size=8)))
    for calibration in ("awq", "gptq", "search"):  # the optimum path does none of them: refused, not ignored
        with pytest.raises(ExportError, match="done by the native builder"):
            export_model(builds.hf("tiny-qwen2"), tmp_path / "b",
                         ExportConfig(backend="optimum", quant_config=QuantConfig(calibration=calibration),
                                      progress=False))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    proc = run_cli("export", builds.hf("tiny-qwen2"), "-o", tmp_path / "c", "--symmetric", "--asymmetric")
    assert proc.returncode != 0 and "not both" in proc.stderr and not (tmp_path / "c").exists()


def test_cli_calibration_none_and_int8_default(builds, tmp_path):
    run_cli("export", builds.hf("tiny-llama"), "-o", tmp_path / "rtn", "--calibration", "none", "--symmetric",
            "--block-size", "32", "-q", check=True)
    q = Manifest.load(tmp_path / "rtn").quantization
    assert (q.calibration, q.symmetric, q.block_size) == (None, True, 32)
    assert Manifest.load(builds.package("tiny-llama", "int8")).quantization.calibration is None  # auto: int4 only
    assert Manifest.load(builds.package("tiny-llama", "int4")).quantization.calibration.startswith("awq: 4 windows")


def test_windows_are_the_corpus_in_and_out_of_the_chat_template(builds):
    from tokenizers import Tokenizer

    source = open_source(builds.smollm2_hf())
    windows = calibration_windows(source, 4, 128)
    assert len(windows) == 4 and {len(w) for w in windows} == {128}
    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    texts = [tokenizer.decode(w, skip_special_tokens=False) for w in windows]
    assert texts[0].startswith("<|im_start|>") and texts[2].startswith("<|im_start|>")
    assert "<|im_start|>" not in texts[1] and "<|im_start|>" not in texts[3]


def test_awq_search_picks_the_scales_with_the_least_output_error():
    """The search's objective recomputed here for every alpha of the grid (alpha 0 = plain rounding): the chosen
    scales are the minimum, and with outlier input channels (as trained models have) they beat plain rounding.
    Measured with this seed: plain rounding's output error 3.3x the chosen one's (alpha 0.5)."""
    from edgelm.export.native.quant import fake_quantize

    rng = np.random.default_rng(0)
    k, n, tokens = 128, 96, 256
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    x[:, rng.choice(k, 6, replace=False)] *= 25.0  # a few large channels
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    mean_abs = np.abs(x).mean(0)
    s, alpha = awq.best_scales(x, mean_abs, [w], bits=4, block_size=32, symmetric=False)

    def error(scales):
        return float((((x / scales) @ fake_quantize(w * scales, 4, 32, False).T - x @ w.T) ** 2).sum())

    errors = {}
    for a in awq.ALPHAS:
        t = mean_abs.astype(np.float64) ** a
        errors[a] = error((t / np.sqrt(t.max() * t.min())).astype(np.float32))
    assert alpha == min(errors, key=errors.get) and error(s) == pytest.approx(min(errors.values()), rel=1e-5)
    assert errors[0.0] > 2.5 * error(s), errors
