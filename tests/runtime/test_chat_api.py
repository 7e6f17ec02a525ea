"""The chat API: options, finish reasons, stop strings, cancellation and multi-turn KV-cache reuse.

References: the same model's full greedy text (str.find for stop strings), a cold prefill of the same
history (cache reuse must not change a single token), exact math for min-p."""

import threading

import numpy as np
import pytest

import edgelm
from edgelm.errors import GenerationError
from edgelm.runtime import Model, load
from edgelm.runtime.generate import PREFILL_CHUNK
from edgelm.runtime.sampling import min_p_filter, softmax

KW = {"max_new_tokens": 24, "ignore_eos": True}
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me about the sea and the sky."}]


@pytest.fixture(scope="module", params=["native", "optimum"])
def model(builds, request) -> Model:
    """Both KV-cache modes: "shared" (native builder, buffers written in place) and "concat" (optimum)."""
    return load(builds.package("tiny-llama", "fp32", request.param))


def test_top_level_load_picks_a_provider(builds):
    m = edgelm.load(builds.package("tiny-llama", "fp32"))
    assert isinstance(m, Model) and m.provider.spec.name in ("cpu", "openvino", "qnn", "dml", "webgpu")


def test_min_p_keeps_tokens_with_at_least_p_times_the_top_probability():
    logits = np.array([2.0, 1.0, 0.0, -1.0, 1.9], dtype=np.float64)
    probs = softmax(logits)
    for p in (0.05, 0.3, 0.5, 0.95):
        kept = np.isfinite(min_p_filter(logits, p))
        assert (kept == (probs >= p * probs.max() - 1e-12)).all()


def test_stop_strings_end_the_text_where_the_full_text_has_them(model):
    full = model.chat(MESSAGES, **KW)
    assert full.finish_reason == "length" and len(full.token_ids) == 24
    for stop in (full.text[5:8], [full.text[12:14], full.text[3:6]], full.text[-2:]):
        hits = [full.text.find(s) for s in ([stop] if isinstance(stop, str) else stop)]
        got = model.chat(MESSAGES, stop=stop, **KW)
        assert got.text == full.text[: min(hits)] and got.finish_reason == "stop"
        events = list(model.chat(MESSAGES, stop=stop, stream=True, **KW))
        assert "".join(e.content for e in events) == got.text and events[-1].finish_reason == "stop"


def test_finish_reasons_and_usage(model):
    full = model.chat(MESSAGES, **KW)
    prompt = len(model.encode_chat(MESSAGES))
    assert full.usage.prompt_tokens == prompt and full.usage.completion_tokens == 24
    # a stop token id: generation ends right before it, reason "stop"
    stop_id = full.token_ids[4]
    got = model.chat(MESSAGES, stop_token_ids=[stop_id], **KW)
    assert got.token_ids == full.token_ids[: full.token_ids.index(stop_id)] and got.finish_reason == "stop"
    # the context fills up before max_new_tokens: reason "context_full" (tiny-llama: 512 positions)
    ids = list(range(5, 5 + 506))
    out = list(model.run(model.request(ids, max_new_tokens=50, ignore_eos=True)))
    assert out[-1].finish_reason == "context_full" and out[-1].usage.completion_tokens == 512 - 506


def test_cancel_ends_a_stream_and_interrupts_a_long_prefill(model):
    stop = threading.Event()
    events = []
    for e in model.chat(MESSAGES, stream=True, cancel=stop, max_new_tokens=200, ignore_eos=True):
        events.append(e)
        if len(events) == 3:
            stop.set()
    assert events[-1].finish_reason == "cancelled" and events[-1].usage.completion_tokens < 10

    class AfterPolls:  # set from its second poll on: the prefill's first run went through
        polls = 0

        def is_set(self):
            self.polls += 1
            return self.polls > 1

    out = list(model.run(model.request(list(range(5, 5 + PREFILL_CHUNK + 200)), max_new_tokens=5),
                         cancel=AfterPolls()))
    assert out[-1].finish_reason == "cancelled" and out[-1].usage.completion_tokens == 0
    assert model.decoder.length == PREFILL_CHUNK  # one prefill run, then it stopped


def test_the_model_is_free_after_a_stream_is_abandoned(model):
    stream = model.chat(MESSAGES, stream=True, **KW)
    next(stream)
    stream.close()
    assert model.chat(MESSAGES, **KW).finish_reason == "length"


def test_multi_turn_reuses_the_cache_and_changes_nothing(model):
    """Five turns: each reuses the keys/values of the history the model already ran and gives exactly the
    tokens a cold prefill of the same history gives."""
    history = list(MESSAGES)
    for turn in range(5):
        warm = model.chat(history, **KW)
        cold = model.chat(history, reuse_cache=False, **KW)
        assert warm.token_ids == cold.token_ids
        if turn:
            assert warm.cached_tokens >= cold.prompt_tokens // 2  # most of the history was not run again
        history += [{"role": "assistant", "content": warm.text}, {"role": "user", "content": f"And turn {turn}?"}]
    # an edited earlier message: only the prefix before the edit is reused, the answer is still the cold one
    edited = [MESSAGES[0], {"role": "user", "content": "Tell me about the sea."}] + history[2:]
    model.chat(history, **KW)
    warm = model.chat(edited, **KW)
    assert warm.token_ids == model.chat(edited, reuse_cache=False, **KW).token_ids
    assert 0 < warm.cached_tokens < len(model.encode_chat(MESSAGES))


@pytest.mark.parametrize("bad, match", [
    ({"stop": [1, 2]}, "stop string"), ({"stop": ["x"] * 17}, "at most 16"), ({"stop": ""}, "stop string"),
    ({"stop_token_ids": [10 ** 9]}, r"stop_token_ids must be integers in \[0, 512\)"),
    ({"min_p": 1.5}, "min_p"), ({"top_p": 0}, "top_p"), ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"temperature": float("nan")}, "temperature"), ({"ignore_eos": "yes"}, "ignore_eos"),
])
def test_bad_options_are_typed_errors_naming_the_option(builds, bad, match):
    m = load(builds.package("tiny-llama", "fp32"))
    with pytest.raises(GenerationError, match=match):
        m.chat(MESSAGES, **bad)
    assert m.chat(MESSAGES, max_new_tokens=2).usage.completion_tokens <= 2  # nothing left locked or half-set


def test_stream_ids_refuses_stop_strings_it_cannot_apply(builds):
    m = load(builds.package("tiny-llama", "fp32"))
    with pytest.raises(GenerationError, match="stop strings need text"):
        m.stream_ids(m.encode_prompt("Hello"), max_new_tokens=4, stop=["x"])
