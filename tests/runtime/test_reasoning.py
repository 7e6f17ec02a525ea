"""Reasoning models: think markers found at export, prompts rendered as transformers renders them, and the
chain of thought split from the answer, in whole results and in streams.

The references are independent of edgelm: transformers' `apply_chat_template` with the real Qwen tokenizer
and DeepSeek-R1-Distill-Qwen's template (tests/r1_distill.py), and the split rule chat templates themselves
apply to an earlier assistant turn (Qwen3's template, written out in `template_split` below)."""

import itertools

import pytest

from edgelm.manifest import Reasoning
from edgelm.runtime import load
from edgelm.runtime.text import ReasoningSplit, StopStrings

THINK = Reasoning("<think>", "</think>")

HISTORIES = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime. 素数"}],
    # earlier assistant turns with their reasoning: the template keeps only what follows </think>
    [{"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "<think>\nThe user greets.\n</think>\n\nHello! How can I help?"},
     {"role": "user", "content": "What is 7 * 6?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "Plain answer, no reasoning."}, {"role": "user", "content": "b"},
     {"role": "assistant", "content": "hmm\n</think>\n\n42"}, {"role": "user", "content": "c <think> d"}],
]


def template_split(text: str) -> tuple[str, str]:
    """(reasoning, content) of a reply, as Qwen3's chat template splits an assistant turn."""
    if "</think>" not in text:
        return "", text
    content = text.split("</think>")[-1].lstrip("\n")
    reasoning = text.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, content


def split_all(pieces: list[str], thinking: bool) -> tuple[str, str]:
    s = ReasoningSplit(THINK, thinking)
    out = [s.feed(p) for p in pieces] + [s.flush()]
    return "".join(r for r, _ in out), "".join(c for _, c in out)


REPLIES = [
    "Let me add.\n2 + 3 = 5.\n</think>\n\nThe answer is 5.",
    "\n\nshort\n\n</think>answer\n\nwith blank lines\n",
    "reasoning only, cut by length",
    "x</think>",
    "</think>\n\nno reasoning at all",
    "a </thi nk> is not a marker</think>ok",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_split_matches_the_template_rule_for_every_way_of_cutting_the_text(reply):
    """The prompt opened the reasoning (R1's template): every cut of the reply into 1-3 pieces gives the
    template's own split (a reply without </think> is all reasoning)."""
    want = template_split(reply) if "</think>" in reply else (reply.strip("\n"), "")
    for cuts in itertools.chain(((),), ((i,) for i in range(1, len(reply))),
                                itertools.combinations(range(1, len(reply)), 2)):
        bounds = (0, *cuts, len(reply))
        pieces = [reply[a:b] for a, b in zip(bounds, bounds[1:])]
        assert split_all(pieces, thinking=True) == want, pieces


def test_split_when_the_model_opens_the_reasoning_itself():
    reply = "\n<think>\nstep one\n</think>\n\nDone."
    for k in range(1, len(reply)):
        assert split_all([reply[:k], reply[k:]], thinking=False) == ("step one", "Done.")
    assert split_all(["No thinking, just <think> talk."], thinking=False) == ("", "No thinking, just <think> talk.")
    assert split_all(["<thi"], thinking=False) == ("", "<thi")  # a marker that never completed is content


def test_stop_strings_cut_before_the_first_one_however_the_text_arrives():
    """Reference: str.find over the whole text."""
    text = "one, two; three; four"
    for stops in (["; "], ["two", "; t"], ["four"], ["absent"], [", two; three; four"]):
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        want = text[: min(hits)] if hits else text
        for k in range(len(text) + 1):
            s = StopStrings(tuple(stops))
            got = s.feed(text[:k]) + s.feed(text[k:])
            got += "" if s.hit else s.flush()
            assert (got, s.hit) == (want, bool(hits)), (stops, k)


def test_markers_recorded_at_export_and_prompts_rendered_as_transformers_does(builds):
    """The real Qwen tokenizer with R1-Distill's tokens and template: edgelm's token ids of each multi-turn
    history equal transformers' apply_chat_template (add_generation_prompt=True), including earlier assistant
    turns whose reasoning the template drops."""
    from transformers import AutoTokenizer

    hf, package = builds.r1()
    model = load(package)
    assert model.manifest.reasoning == THINK
    tok = AutoTokenizer.from_pretrained(hf)
    for messages in HISTORIES:
        want = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert model.encode_chat(messages) == want
        assert model._encode_chat(messages)[1]  # the prompt ends with "<think>\n": the reply starts in reasoning


def test_chat_splits_the_generated_reasoning_in_results_and_streams(builds):
    """The tiny R1 model closes its reasoning at its 7th greedy token (tests/r1_distill.py): the result and
    the stream split the raw text as the template rule does."""
    _, package = builds.r1()
    model = load(package)
    messages = HISTORIES[0]
    result = model.chat(messages, max_new_tokens=24, ignore_eos=True)
    raw = model.tokenizer.decode(result.token_ids)
    assert "</think>" in raw
    reasoning, content = template_split(raw)
    assert (result.reasoning, result.text) == (reasoning, content) and reasoning and content
    events = list(model.chat(messages, max_new_tokens=24, ignore_eos=True, stream=True))
    assert "".join(e.reasoning for e in events) == reasoning
    assert "".join(e.content for e in events) == content
    assert events[-1].finish_reason == "length" and events[-1].usage.completion_tokens == 24
    assert model.complete("What is", max_new_tokens=4).reasoning is None  # a raw completion is not split


def test_packages_of_plain_chat_models_have_no_markers(builds):
    assert load(builds.package("tiny-llama", "fp32")).manifest.reasoning is None


def test_a_manifest_with_empty_think_markers_is_refused(builds, tmp_path):
    import json
    import shutil

    from edgelm.errors import PackageError

    _, package = builds.r1()
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    data = json.loads((copy / "edgelm.json").read_text())
    data["reasoning"] = {"start": "<think>", "end": ""}
    (copy / "edgelm.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="reasoning.end"):
        load(copy)
