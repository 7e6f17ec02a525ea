"""Speculative decoding: greedy output token for token the plain output, for every drafter, KV layout and
length; rollback that leaves no trace in the cache; seeded sampling that reproduces; and the acceptance rule
that leaves the output distributed as the model's (exact math, counted over many draws).

References: the same package's plain decoding (greedy), a cold full forward (the cache after rollback), the
target distribution p itself (speculative sampling)."""

import threading

import numpy as np
import pytest

from edgelm.errors import GenerationError
from edgelm.runtime import load
from edgelm.runtime.generate import Outcome, generate_ids
from edgelm.runtime.sampling import SamplingConfig, softmax
from edgelm.runtime.speculative import (Draft, DraftLength, DraftModel, PromptLookup, Speculation, speculation,
                                        verify)

GREEDY = SamplingConfig()
PROMPT = "The capital of France is Paris, a city on the river. The capital of France is"


@pytest.fixture(scope="module", params=["native", "optimum"])
def model(builds, request):
    """Both KV-cache modes: "shared" (rollback is a mask) and "concat" (rollback slices the arrays)."""
    return load(builds.package("tiny-llama", "fp32", request.param))


class Oracle:
    """Drafts the plain output's next tokens, one of them wrong in every other draft: acceptance is then
    partial as often as it is whole, and each rejection tests the correction token."""

    name = "oracle"

    def __init__(self, plain: list[int], prompt_len: int, vocab: int):
        self.plain, self.prompt_len, self.vocab, self.calls = plain, prompt_len, vocab, 0

    def propose(self, history, k, sampling, rng):
        at = len(history) - self.prompt_len
        tokens = list(self.plain[at:at + k])
        self.calls += 1
        if self.calls % 2 and tokens:
            bad = (self.calls // 2) % len(tokens)
            tokens[bad] = (tokens[bad] + 1) % self.vocab
        return Draft(tokens)


def _run(model, prompt, n, spec=None, sampling=GREEDY, stop=(), **kw):
    return list(generate_ids(model.decoder, prompt, n, sampling, stop, speculation=spec, **kw))


def test_greedy_output_is_the_plain_output_for_every_drafter(builds, model):
    prompt = model.tokenizer.encode(PROMPT)
    plain = _run(model, prompt, 48)
    assert len(set(plain)) > 5
    drafts = {
        "prompt-lookup": Speculation(PromptLookup(max_ngram=3, min_ngram=1)),
        "oracle": Speculation(Oracle(plain, len(prompt), model.manifest.vocab_size)),
        # another package of the same tokenizer drafts (int8 weights: close to, not the same as, the model)
        "draft-model": Speculation(DraftModel(load(builds.package("tiny-llama", "int8")), model)),
    }
    for name, spec in drafts.items():
        for k in (1, 3, 8):
            spec.length = DraftLength(k=k, k_max=k)
            spec.stats.runs = spec.stats.proposed = spec.stats.accepted = 0
            assert _run(model, prompt, 48, spec) == plain, (name, k)
            s = spec.stats
            assert s.runs > 0 and s.accepted <= s.proposed, (name, k, s)
            assert s.accepted > 0 or name == "prompt-lookup", (name, k, s)  # a random model seldom repeats its prompt
    oracle = drafts["oracle"].stats  # every other draft had a wrong token: some drafts kept whole, some cut
    assert oracle.accepted < oracle.proposed


def test_every_length_and_stop_token_ends_where_plain_decoding_does(model):
    prompt = model.tokenizer.encode(PROMPT)
    plain = _run(model, prompt, 40)
    for n in (1, 2, 3, 5, 9, 17):
        spec = Speculation(Oracle(plain, len(prompt), model.manifest.vocab_size), DraftLength(k=4, k_max=8))
        assert _run(model, prompt, n, spec) == plain[:n]
    for stop in (plain[3], plain[10], plain[25]):
        spec = Speculation(Oracle(plain, len(prompt), model.manifest.vocab_size), DraftLength(k=8, k_max=8))
        outcome = Outcome()
        got = _run(model, prompt, 40, spec, stop=(stop,), outcome=outcome)
        assert got == plain[:plain.index(stop)] and outcome.finish_reason == "stop"


def test_rollback_leaves_no_trace_in_the_cache(model):
    """After a speculative generation the cache holds exactly the prompt and the tokens fed (not the rejected
    drafts): the next step's logits equal a cold forward over the same sequence."""
    prompt = model.tokenizer.encode(PROMPT)
    plain = _run(model, prompt, 30)
    spec = Speculation(Oracle(plain, len(prompt), model.manifest.vocab_size), DraftLength(k=8, k_max=8))
    got = _run(model, prompt, 30, spec)
    assert got == plain and spec.stats.accepted < spec.stats.proposed  # rejections happened
    seq = prompt + got
    assert model.decoder.tokens == seq[:-1]  # the last token is returned, not yet fed
    step = model.decoder.forward([seq[-1]])
    model.decoder.reset()
    cold = model.decoder.forward(seq)
    assert np.abs(step - cold).max() < 1e-4


def test_seeded_sampling_with_speculation_reproduces(model):
    prompt = model.tokenizer.encode(PROMPT)
    sampling = SamplingConfig(temperature=0.8, top_k=40, seed=7)
    runs = [_run(model, prompt, 32, Speculation(PromptLookup(3, 1)), sampling) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 32
    other = _run(model, prompt, 32, Speculation(PromptLookup(3, 1)), SamplingConfig(temperature=0.8, top_k=40, seed=8))
    assert other != runs[0]


@pytest.mark.parametrize("draft_kind", ["point", "distribution"])
def test_speculative_sampling_keeps_the_model_distribution(draft_kind):
    """One drafted position, many seeds: the token that comes out is distributed as p (the model's processed
    distribution), whatever the drafter proposed. Counted over 40000 draws of a 6-token vocabulary; the bound is
    ~4.5 standard errors of a frequency."""
    logits = np.array([2.0, 1.2, 0.3, -0.5, 1.9, 0.0], dtype=np.float32)
    sampling = SamplingConfig(temperature=1.0)
    p = softmax(logits)
    q = softmax(np.array([0.1, 2.5, 0.2, 1.0, -1.0, 0.4]))
    rng = np.random.default_rng(0)
    counts = np.zeros(6)
    draws = 40000
    for _ in range(draws):
        if draft_kind == "point":
            draft = Draft([1])  # always proposes token 1 (p = 0.22)
        else:
            d = int(rng.choice(6, p=q))
            draft = Draft([d], [q])
        kept, after = verify(np.stack([logits, logits]), draft, sampling, rng, [])
        counts[kept[0] if kept else after] += 1
    freq = counts / draws
    assert np.abs(freq - p).max() < 4.5 * np.sqrt(p * (1 - p) / draws).max()


def test_greedy_verification_keeps_exactly_the_agreeing_prefix():
    rows = np.full((4, 5), -1.0, dtype=np.float32)
    for j, best in enumerate([2, 4, 1, 3]):
        rows[j, best] = 1.0
    assert verify(rows, Draft([2, 4, 1]), GREEDY, None, []) == ([2, 4, 1], 3)  # all kept: the next after them
    assert verify(rows, Draft([2, 0, 1]), GREEDY, None, []) == ([2], 4)  # cut at the first disagreement
    assert verify(rows, Draft([3]), GREEDY, None, []) == ([], 2)


def test_prompt_lookup_drafts_what_followed_the_last_ngram():
    lookup = PromptLookup(max_ngram=3, min_ngram=1)
    history = [5, 6, 7, 8, 9, 1, 5, 6, 7]
    assert lookup.propose(history, 3).tokens == [8, 9, 1]  # the 3-gram 5 6 7 was followed by 8 9 1
    assert lookup.propose([1, 2, 3, 4], 3).tokens == []  # nothing repeats
    assert lookup.propose([4, 1, 2, 4, 1, 3, 4, 1], 2).tokens == [3, 4]  # the most recent match wins
    assert PromptLookup(3, 2).propose([7, 9, 3, 9], 2).tokens == []  # a one-token match is below min_ngram


def test_draft_length_adapts_down_to_plain_decoding_and_back():
    length = DraftLength(k=4, k_max=8, patience=2, rest=3)
    length.update(4, 4)
    assert length.next() == 8  # all kept: double
    length.update(8, 2)
    assert length.next() == 3  # cut to one more than was kept
    length.update(3, 0)
    length.update(1, 0)  # nothing kept twice in a row: plain steps
    assert [length.next() for _ in range(4)] == [0, 0, 0, 1]


def test_bad_speculate_options_are_named(builds, model):
    with pytest.raises(GenerationError, match="speculate must be one of prompt-lookup"):
        model.chat([{"role": "user", "content": "hi"}], speculate="ngram-magic")
    with pytest.raises(GenerationError, match="cannot draft for itself"):
        model.chat([{"role": "user", "content": "hi"}], speculate=model)
    other = load(builds.package("smollm2", "int4"))  # another tokenizer
    with pytest.raises(GenerationError, match="must share the model's tokenizer"):
        model.chat([{"role": "user", "content": "hi"}], speculate=other)
    with pytest.raises(GenerationError, match="speculate must be a drafter name"):
        speculation(3.5)


def test_speculation_is_refused_where_several_token_runs_compute_otherwise(builds):
    """int4 at accuracy level 4 (int8 activations, the default) amplifies onnxruntime's small differences between a
    run of tokens and one-token steps (SmolLM2: 2-3 logits), fp16 packages differ by up to 0.08, so a verified draft would not
    give the plain answer: refused by name. At level 1 (float activations) a run of tokens equals the one-token
    steps."""
    level4 = load(builds.package("tiny-llama", "int4"))
    assert level4.manifest.quantization.accuracy_level == 4
    with pytest.raises(GenerationError, match="re-export with --accuracy-level 1"):
        level4.chat([{"role": "user", "content": "hi"}], speculate="prompt-lookup")
    fp16 = load(builds.package("tiny-llama", "fp16"))  # fp16 activations: SmolLM2 measured 0.08 logits apart
    with pytest.raises(GenerationError, match="fp16 packages are not measured to"):
        fp16.chat([{"role": "user", "content": "hi"}], speculate="prompt-lookup")


def test_npu_packages_refuse_speculation_because_their_runs_differ_from_steps(builds):
    """The static graphs take a chunk whatever the real tokens, so verification would cost one step; but on the
    QNN HTP (simulator) a run of two real tokens computes other logits than two one-token runs (tiny-llama a16w8:
    0.039 apart over these 12 tokens; over 32 random ones up to 0.05 with different greedy tokens, 0.1 for runs
    of 8): refused by name. This test fails, saying to lift the refusal, the day the two agree."""
    model = load(builds.npu("tiny-llama"), ep="qnn")
    with pytest.raises(GenerationError, match="static graphs do not"):
        model.chat([{"role": "user", "content": "hi"}], speculate="prompt-lookup")
    d, ids = model.decoder, list(range(5, 25))
    d.reset()
    d.forward(ids[:8])
    steps = np.stack([d.forward([t]) for t in ids[8:]])
    d.reset()
    d.forward(ids[:8])
    runs = np.concatenate([d.forward(ids[i:i + 2], last_only=False) for i in range(8, len(ids), 2)])
    assert np.abs(runs - steps).max() > 1e-3, "runs now equal steps on the HTP: allow speculation on static graphs"


def test_the_api_reports_what_speculation_did(model):
    messages = [{"role": "user", "content": PROMPT}]
    plain = model.chat(messages, max_new_tokens=32, ignore_eos=True)
    fast = model.chat(messages, max_new_tokens=32, ignore_eos=True, speculate="prompt-lookup")
    assert fast.text == plain.text and fast.token_ids == plain.token_ids and plain.speculation is None
    assert fast.speculation is not None and fast.speculation.runs >= 0
    events = list(model.chat(messages, max_new_tokens=32, ignore_eos=True, speculate="prompt-lookup", stream=True))
    assert "".join(e.content for e in events) == plain.text and events[-1].speculation is not None
    cancel = threading.Event()
    stream = model.chat(messages, max_new_tokens=32, ignore_eos=True, speculate="prompt-lookup", stream=True,
                        cancel=cancel)
    next(stream)
    cancel.set()
    assert list(stream)[-1].finish_reason == "cancelled"
