"""Export: what a package holds, and how bad input fails (typed, one line, nothing left behind)."""

import json
import shutil

from pathlib import Path

import onnx
import pytest

from edgelm.errors import ExportError, ModelSourceError, OutputExistsError, QuantizationError, UnsupportedArchitecture
from edgelm.export import ExportConfig, export_model, registered_architectures
from edgelm.manifest import MANIFEST_NAME, Manifest
from tests.conftest import run_cli


def _ops(package) -> dict[str, int]:
    graph = onnx.load(str(package / "model.onnx"), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.mark.parametrize("quant,bits", [("int4", 4), ("int8", 8)])
def test_weight_only_packages_use_matmulnbits_for_every_linear(builds, quant, bits):
    """The optimum path: onnxruntime's quantizer (the native graph is checked in test_native.py)."""
    package = builds.package("tiny-qwen2", quant, "optimum")
    ops = _ops(package)
    # 2 layers x (q, k, v, o, gate, up, down) + the untied lm_head
    assert ops.get("MatMulNBits") == 2 * 7 + 1
    graph = onnx.load(str(package / "model.onnx"), load_external_data=False).graph
    attrs = {a.name: onnx.helper.get_attribute_value(a) for n in graph.node if n.op_type == "MatMulNBits"
             for a in n.attribute}
    assert attrs["bits"] == bits and attrs["block_size"] == 32 and attrs["accuracy_level"] == 4


def test_fp16_package_keeps_fp32_io(builds):
    package = builds.package("tiny-qwen2", "fp16", "optimum")
    graph = onnx.load(str(package / "model.onnx"), load_external_data=False).graph
    float_io = [v for v in list(graph.input) + list(graph.output) if v.name != "input_ids" and "mask" not in v.name
                and "position" not in v.name]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in float_io)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)


def test_every_registered_architecture_has_a_parity_preset():
    from edgelm.export.presets import PRESETS
    from tests.runtime.test_parity import NATIVE_PRESETS
    from tests.runtime.test_parity import PRESETS as TESTED

    tested = {PRESETS[p].config["architectures"][0] for p in (*TESTED, *NATIVE_PRESETS)}
    assert set(registered_architectures()) <= tested, "add a tiny preset and parity test for each architecture"


def _no_leftovers(folder):
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_missing_folder(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        export_model(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_without_config(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        export_model(tmp_path / "model", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _no_leftovers(tmp_path)


def test_unknown_architecture_names_supported_ones_and_why_optimum_failed(tmp_path, builds):
    """Neither path knows it: the error names the native builder's architectures and optimum's failure."""
    model = tmp_path / "model"
    shutil.copytree(builds.hf("tiny-llama"), model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"], config["model_type"] = ["FancyForCausalLM"], "fancy"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitecture, match="FancyForCausalLM.*LlamaForCausalLM.*Qwen2ForCausalLM.*optimum "
                       "failed: .*fancy"):
        export_model(model, tmp_path / "out", ExportConfig(progress=False))
    assert not (tmp_path / "out").exists() and not _no_leftovers(tmp_path)


def test_unknown_quantization(tmp_path, builds):
    with pytest.raises(QuantizationError, match="int4"):
        export_model(builds.hf("tiny-llama"), tmp_path / "out", ExportConfig(quant="int3"))


def test_existing_package_is_kept_without_force_and_replaced_with_it(tmp_path, builds):
    out = tmp_path / "out"
    shutil.copytree(builds.package("tiny-llama", "int4"), out)
    (out / "old.txt").write_text("the old package's")
    with pytest.raises(OutputExistsError, match="--force"):
        export_model(builds.hf("tiny-llama"), out, ExportConfig(quant="fp32", progress=False))
    assert (out / "old.txt").is_file()
    export_model(builds.hf("tiny-llama"), out, ExportConfig(quant="fp32", progress=False, force=True))
    assert Manifest.load(out).quantization.mode == "fp32" and not (out / "old.txt").exists()
    assert not _no_leftovers(tmp_path)


@pytest.mark.parametrize("where", ["source", "source-parent", "cwd", "documents"])
def test_force_never_replaces_what_is_not_an_edgelm_package(tmp_path, builds, monkeypatch, where):
    """Issue 12 #1: `-o SRC --force`, `-o . --force`, `-o <documents> --force` deleted them."""
    src = tmp_path / "models" / "src"
    shutil.copytree(builds.hf("tiny-llama"), src)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    monkeypatch.chdir(docs if where == "cwd" else tmp_path)
    out = {"source": src, "source-parent": src.parent, "cwd": Path("."), "documents": docs}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ExportError, match="choose an output folder of its own|replaces only an edgelm package"):
        export_model(src, out, ExportConfig(quant="fp32", progress=False, force=True))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_failure_midway_leaves_nothing_and_keeps_old_output(tmp_path, builds):
    """A folder that passes the checks but has no weights fails inside the exporter."""
    model = tmp_path / "model"
    shutil.copytree(builds.hf("tiny-llama"), model)
    (model / "model.safetensors").unlink()
    out = tmp_path / "out"
    shutil.copytree(builds.package("tiny-llama", "int4"), out)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="nothing was written"):  # optimum fails deep inside
        export_model(model, out, ExportConfig(quant="fp32", backend="optimum", progress=False, force=True))
    assert (out / "keep.txt").read_text() == "mine"
    assert not _no_leftovers(tmp_path)
    with pytest.raises(ModelSourceError, match="no .safetensors"):  # the native reader says it plainly
        export_model(model, out, ExportConfig(quant="int4", progress=False, force=True))
    assert (out / "keep.txt").read_text() == "mine"
    assert not _no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "does not exist"),
        ("no-config", "no config.json"),
        ("unknown-arch", "not supported"),
        ("exists", "already exists"),
        ("loop", "model folder {model} is a symlink loop"),
        ("file", "model folder {model} is a file, not a folder"),
        ("out-file", "-o {out} is a file, not a folder"),
        ("out-loop", "-o {out} is a symlink loop"),
    ],
)
def test_cli_bad_input_is_one_line_with_nonzero_exit(tmp_path, builds, case, expected):
    model, out = tmp_path / "model", tmp_path / "out"
    expected = expected.format(model=model, out=out)
    if case == "no-config":
        model.mkdir()
    elif case == "loop":
        model.symlink_to(model)
    elif case == "file":
        model.write_text("not a model")
    elif case in ("out-file", "out-loop"):
        shutil.copytree(builds.hf("tiny-llama"), model)
        out.write_text("mine") if case == "out-file" else out.symlink_to(out)
    elif case in ("unknown-arch", "exists"):
        shutil.copytree(builds.hf("tiny-llama"), model)
        if case == "unknown-arch":
            cfg = json.loads((model / "config.json").read_text())
            cfg["architectures"], cfg["model_type"] = ["FancyForCausalLM"], "fancy"
            (model / "config.json").write_text(json.dumps(cfg))
        else:
            out.mkdir()
    proc = run_cli("export", model, "-o", out, "--quant", "fp32", "-q")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgelm: error:") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not _no_leftovers(tmp_path)
    if case == "out-file":
        assert out.read_text() == "mine"  # left as it was
    else:
        assert case in ("exists", "out-loop") or not out.exists()


def test_cli_synthetic_export_and_info(tmp_path):
    out = tmp_path / "pkg"
    proc = run_cli("export", "--synthetic", "tiny-mistral", "-o", out, "--quant", "int8", "-q", check=True)
    assert "MistralForCausalLM" in proc.stdout and "int8" in proc.stdout
    info = run_cli("info", out, check=True).stdout
    assert "MatMulNBits, 8 bits, block 32" in info and "synthetic:tiny-mistral:seed0" in info
    env = run_cli("info", check=True).stdout
    assert "CPUExecutionProvider" in env and "dml" in env


def test_a_tokenizer_that_adds_bos_gets_it_from_the_runtime_as_transformers_does(tmp_path, builds):
    """DeepSeek-R1-Distill and Llama 3 tokenizers add a BOS (a post-processor); the package must say so and the
    runtime must add it, exactly as transformers' tokenizer encodes the same text."""
    from tokenizers import Tokenizer, processors
    from transformers import AutoTokenizer

    from edgelm.runtime import load

    src = tmp_path / "src"
    shutil.copytree(builds.hf("tiny-llama"), src)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    bos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    tok.save(str(src / "tokenizer.json"))
    for name in ("config.json", "generation_config.json"):
        data = json.loads((src / name).read_text())
        data["bos_token_id"] = bos
        (src / name).write_text(json.dumps(data))
    tok_config = json.loads((src / "tokenizer_config.json").read_text())
    tok_config["bos_token"] = "<|endoftext|>"
    (src / "tokenizer_config.json").write_text(json.dumps(tok_config))
    manifest = export_model(src, tmp_path / "pkg", ExportConfig(quant="fp32", progress=False, check=False))
    assert manifest.generation.add_bos and manifest.generation.bos_token_id == bos
    text = "The capital of France is"
    assert load(tmp_path / "pkg").encode_prompt(text) == AutoTokenizer.from_pretrained(src)(text).input_ids


def test_sampling_defaults_come_from_generation_config(tmp_path, builds):
    src = tmp_path / "src"
    shutil.copytree(builds.hf("tiny-llama"), src)
    gen = json.loads((src / "generation_config.json").read_text())
    gen.update(do_sample=True, temperature=0.6, top_k=20, top_p=0.95, repetition_penalty=1.1)
    (src / "generation_config.json").write_text(json.dumps(gen))
    g = export_model(src, tmp_path / "pkg", ExportConfig(quant="fp32", progress=False, check=False)).generation
    assert (g.temperature, g.top_k, g.top_p, g.repetition_penalty) == (0.6, 20, 0.95, 1.1)
    gen["do_sample"] = False  # greedy: the sampling knobs do not apply, the penalty still does
    (src / "generation_config.json").write_text(json.dumps(gen))
    g = export_model(src, tmp_path / "pkg2", ExportConfig(quant="fp32", progress=False, check=False)).generation
    assert (g.temperature, g.top_k, g.top_p, g.repetition_penalty) == (0.0, 0, 1.0, 1.1)


def test_native_only_precisions_are_refused_on_the_optimum_path(builds, tmp_path):
    """int4-fp16 (the GPU format) is the native builder's: asking optimum for it must not quietly give int4."""
    config = ExportConfig(quant="int4-fp16", backend="optimum", progress=False)
    with pytest.raises(ExportError, match="int4-fp16 is built by the native builder only"):
        export_model(builds.hf("tiny-llama"), tmp_path / "out", config)
    assert not (tmp_path / "out").exists()
