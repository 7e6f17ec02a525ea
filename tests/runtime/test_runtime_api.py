"""Runtime API behaviour: streaming, chat templates, providers and generation limits."""

import pytest

from edgelm.errors import GenerationError, PackageError, ProviderUnavailable
from edgelm.runtime import load
from edgelm.runtime.chat import render_chat
from edgelm.runtime.providers import PROVIDERS, resolve
from edgelm.runtime.session import session_options
from edgelm.runtime.tokenizer import StreamDecoder


def test_stream_pieces_join_to_the_full_decode(builds):
    model = load(builds.package("tiny-qwen2", "fp32"))
    ids = list(model.stream_ids(model.encode_prompt("Hello"), max_new_tokens=40, ignore_eos=True))
    pieces = StreamDecoder(model.tokenizer)
    text = "".join(pieces.push(t) for t in ids) + pieces.flush()
    assert text == model.tokenizer.decode(ids)


def test_stream_never_splits_multibyte_characters(builds):
    model = load(builds.package("tiny-qwen2", "fp32"))
    text = "naïve café — 東京 ✓"
    ids = model.tokenizer.encode(text)
    pieces = StreamDecoder(model.tokenizer)
    out = [pieces.push(t) for t in ids] + [pieces.flush()]
    assert "".join(out) == text
    assert not any("\ufffd" in p for p in out)


def test_stop_at_eos_and_max_new_tokens(builds):
    model = load(builds.package("tiny-llama", "fp32"))
    prompt = model.encode_prompt("Hello")
    greedy = list(model.stream_ids(prompt, max_new_tokens=12, ignore_eos=True))
    assert len(greedy) == 12
    # Declare the 4th greedy token an end-of-sequence token: generation stops right before it.
    stop = greedy[3]
    first = greedy.index(stop)
    from edgelm.runtime.generate import generate_ids

    out = list(generate_ids(model.decoder, prompt, 12, stop_ids=[stop]))
    assert out == greedy[:first]


def test_prompt_longer_than_context_is_a_typed_error(builds):
    model = load(builds.package("tiny-llama", "fp32"))
    with pytest.raises(GenerationError, match="context length 512"):
        list(model.stream_ids([5] * 600, max_new_tokens=4))
    with pytest.raises(GenerationError, match="empty"):
        list(model.stream_ids([], max_new_tokens=4))


def test_generation_stops_at_a_full_context(builds):
    model = load(builds.package("tiny-llama", "fp32"))
    out = list(model.stream_ids([5] * 508, max_new_tokens=50, ignore_eos=True))
    assert len(out) == 4


def test_chat_template_renders_like_hf():
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    text = render_chat(template, [{"role": "user", "content": "hi"}], eos_token="</s>")
    assert text == "<user>hi</s>"
    with pytest.raises(GenerationError, match="no chat template"):
        render_chat(None, [{"role": "user", "content": "hi"}])
    with pytest.raises(GenerationError, match="role"):
        render_chat(template, [{"content": "hi"}])
    refusing = "{{ raise_exception('only user turns') }}"
    with pytest.raises(GenerationError, match="only user turns"):
        render_chat(refusing, [{"role": "user", "content": "hi"}])


def test_unknown_and_missing_providers_name_the_alternatives():
    with pytest.raises(ProviderUnavailable, match="unknown execution provider 'npu9'.*cpu"):
        resolve("npu9")
    with pytest.raises(ProviderUnavailable, match="onnxruntime-directml"):
        resolve("dml")  # not in the Linux CPU build


def test_directml_session_options_follow_its_spec():
    import onnxruntime as ort

    opts = session_options(PROVIDERS["dml"], threads=2)
    assert opts.enable_mem_pattern is False
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.intra_op_num_threads == 2


def test_corrupt_graph_is_a_package_error(builds, tmp_path):
    import shutil

    copy = tmp_path / "pkg"
    shutil.copytree(builds.package("tiny-llama", "fp32"), copy)
    (copy / "model.onnx").write_bytes(b"\0" * (copy / "model.onnx").stat().st_size)
    with pytest.raises(PackageError, match="fails its sha256 check"):
        load(copy)  # verified by default
    with pytest.raises(PackageError, match="onnxruntime cannot load"):
        load(copy, verify=False)
