"""The manifest: round trip, versioning, and typed errors for broken or foreign packages."""

import json
from pathlib import Path

import pytest

from edgelm.errors import PackageError
from edgelm.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest


def _manifest(builds) -> tuple[Path, Manifest]:
    path = builds.package("tiny-qwen2", "int4")
    return path, Manifest.load(path)


def test_round_trip_and_contents(builds):
    path, m = _manifest(builds)
    assert Manifest.from_json(m.to_json()) == m
    assert m.format_version == FORMAT_VERSION
    assert m.architecture == "Qwen2ForCausalLM"
    assert m.quantization.mode == "int4" and m.quantization.method == "MatMulNBits"
    q = m.quantization
    assert (q.bits, q.block_size, q.mlp_block_size, q.symmetric) == (4, 32, 128, False)
    assert q.calibration.startswith("awq: 4 windows x 128 tokens")
    assert m.quantization.accuracy_level == 4
    assert m.kv_cache.num_layers == 2 and m.kv_cache.num_kv_heads == 2 and m.kv_cache.head_dim == 16
    assert m.io.past_names(1) == ("past_key_values.1.key", "past_key_values.1.value")
    assert {"model.onnx", "model.onnx.data", "tokenizer.json"} <= set(m.files)
    assert m.chat_template and "<|im_start|>" in m.chat_template
    assert {"edgelm", "onnxruntime", "torch", "transformers", "optimum-onnx"} <= set(m.producer)
    m.verify(path, hashes=True)


def test_newer_format_is_refused():
    with pytest.raises(PackageError, match="upgrade edgelm"):
        Manifest.from_dict({"format_version": FORMAT_VERSION + 1})


def test_missing_and_mistyped_fields_are_named(builds):
    _, m = _manifest(builds)
    data = m.to_dict()
    del data["kv_cache"]["head_dim"]
    with pytest.raises(PackageError, match="kv_cache.head_dim is missing"):
        Manifest.from_dict(data)
    data = m.to_dict()
    data["context_length"] = "long"
    with pytest.raises(PackageError, match="context_length .* should be int"):
        Manifest.from_dict(data)


def test_tampered_file_fails_hash_check(builds, tmp_path):
    import shutil

    src, m = _manifest(builds)
    copy = tmp_path / "pkg"
    shutil.copytree(src, copy)
    tok = copy / "tokenizer.json"
    data = bytearray(tok.read_bytes())
    data[10] ^= 1
    tok.write_bytes(bytes(data))
    m.verify(copy, hashes=False)  # same size: the cheap check passes
    with pytest.raises(PackageError, match="sha256"):
        m.verify(copy)  # hashes by default
    (copy / "model.onnx.data").unlink()
    with pytest.raises(PackageError, match="missing"):
        m.verify(copy, hashes=False)


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        Manifest.load(tmp_path / "nope")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    for name, problem in (("loop", "is a symlink loop"), ("dangling", "which does not exist"),
                          ("file", "is a file, not a folder")):
        with pytest.raises(PackageError, match=problem):
            Manifest.load(tmp_path / name)
    with pytest.raises(PackageError, match=f"no {MANIFEST_NAME}"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"architecture": "x"}))
    with pytest.raises(PackageError, match="format_version"):
        Manifest.load(tmp_path)
