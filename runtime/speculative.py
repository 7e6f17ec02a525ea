"""Speculative decoding: a drafter proposes k tokens cheaply, the model checks them in one run, and every
token it agrees with is kept. A decode step reads all the weights for one token; a verification run reads them
once for k + 1 positions, so each accepted draft token is a step saved.

Greedy decoding keeps a draft token when it is the model's own argmax at its place, so the output is the plain
greedy output. Sampling uses speculative sampling (Leviathan et al. 2023, Chen et al. 2023): draft token d is
kept with probability min(1, p(d) / q(d)), else the token is drawn from max(0, p - q) renormalised, which leaves
the output distributed as the model's own; p is the model's distribution after the request's sampling settings
(`sampling.distribution`), q the drafter's (a drafter without one, prompt lookup, proposes point masses).
The generation's seeded generator makes every draw, so a seed reproduces the output.

Drafters are a registry (`DRAFTERS`): "prompt-lookup" (n-gram matches in the prompt and the text so far: no
second model) and "draft-model" (a smaller package sharing the tokenizer). `DraftLength` adapts k to what was
accepted, down to plain decoding while nothing is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.decoder import shared_prefix
from edgelm.runtime.sampling import SamplingConfig, distribution, draw


@dataclass
class Draft:
    tokens: list[int]
    dists: list[np.ndarray | int] | None = None  # the drafter's distribution per token (None: point masses)


class Drafter(Protocol):
    name: str

    def propose(self, history: list[int], k: int, sampling: SamplingConfig, rng: np.random.Generator) -> Draft: ...


DRAFTERS: dict[str, Callable[..., Drafter]] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        DRAFTERS[name] = cls
        return cls

    return wrap


@register("prompt-lookup")
class PromptLookup:
    """The tokens that followed the most recent earlier occurrence of the last n tokens (n from `max_ngram`
    down to `min_ngram`), in the prompt or the text so far."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 2):
        if not 1 <= min_ngram <= max_ngram:
            raise GenerationError(f"prompt lookup needs 1 <= min_ngram <= max_ngram, not {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, history: list[int], k: int, sampling=None, rng=None) -> Draft:
        seq = np.asarray(history, dtype=np.int64)
        for n in range(min(self.max_ngram, len(seq) - 1), self.min_ngram - 1, -1):
            earlier = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)  # every n-gram that ends before the last
            hits = np.flatnonzero((earlier == seq[-n:]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return Draft(seq[start:start + k].tolist())
        return Draft([])


@register("draft-model")
class DraftModel:
    """A smaller package with the same tokenizer drafts greedily or, when the request samples, by sampling
    (its distributions go into the acceptance test). Its cache follows the text: each proposal keeps the
    prefix it shares with the history and runs the rest."""

    def __init__(self, model, target=None):
        self.model = model
        if target is not None and not _same_tokenizer(model, target):
            raise GenerationError("the draft package must share the model's tokenizer (same vocabulary); "
                                  f"{model.path} and {target.path} differ")

    def propose(self, history: list[int], k: int, sampling: SamplingConfig, rng: np.random.Generator) -> Draft:
        decoder = self.model.decoder
        k = min(k, decoder.context_length - len(history))
        if k <= 0:
            return Draft([])
        decoder.truncate(shared_prefix(decoder.tokens, history[:-1]))  # the last token runs: its logits are needed
        logits = decoder.forward(history[len(decoder.tokens):])
        tokens: list[int] = []
        dists: list[np.ndarray | int] = []
        while True:
            dist = distribution(logits, sampling, np.asarray(history + tokens, dtype=np.int64))
            tokens.append(draw(dist, rng))
            dists.append(dist)
            if len(tokens) == k:
                return Draft(tokens, dists)
            logits = decoder.forward([tokens[-1]])


def _same_tokenizer(draft, target) -> bool:
    """The same tokenizer file (the manifests' hashes: checked per request, so cheap), else the same vocabulary."""
    if draft.manifest.vocab_size > target.manifest.vocab_size:
        return False
    files = [m.manifest.files.get(m.manifest.tokenizer_file) for m in (draft, target)]
    if all(files) and files[0].sha256 == files[1].sha256:
        return True
    return draft.tokenizer.vocab() == target.tokenizer.vocab()


@dataclass
class DraftLength:
    """How many tokens to draft next: doubled after a fully accepted draft, cut to one more than was accepted
    otherwise; after `patience` drafts in a row with nothing accepted, `rest` plain steps before trying again."""

    k: int = 4
    k_max: int = 8
    patience: int = 2
    rest: int = 16
    _misses: int = 0
    _resting: int = 0

    def next(self) -> int:
        if self._resting:
            self._resting -= 1
            return 0
        return self.k

    def update(self, proposed: int, accepted: int) -> None:
        if accepted == proposed:
            self.k, self._misses = min(self.k_max, 2 * self.k), 0
            return
        self.k = max(1, accepted + 1)
        self._misses = self._misses + 1 if accepted == 0 else 0
        if self._misses >= self.patience:
            self._resting, self._misses = self.rest, 0


@dataclass
class SpecStats:
    """What a speculative generation did: verification runs, draft tokens proposed and accepted."""

    runs: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_accepted(self) -> float:
        """Draft tokens kept per verification run."""
        return self.accepted / self.runs if self.runs else 0.0


@dataclass
class Speculation:
    """One generation's drafter, adaptive draft length and counts."""

    drafter: Drafter
    length: DraftLength = field(default_factory=DraftLength)
    stats: SpecStats = field(default_factory=SpecStats)

    @property
    def source(self) -> str:
        return self.drafter.name


def speculation(spec, target=None) -> Speculation | None:
    """A request's `speculate` option: None (plain decoding), a drafter name ("prompt-lookup"), a draft Model
    (a smaller package sharing the tokenizer) or a Drafter; a fresh Speculation each generation."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, str):
        if spec not in DRAFTERS or spec == "draft-model":
            raise GenerationError(f"speculate must be one of {', '.join(n for n in DRAFTERS if n != 'draft-model')}"
                                  f", a draft model (edgelm.load(...)) or None, not {spec!r}")
        return Speculation(DRAFTERS[spec]())
    if hasattr(spec, "decoder") and hasattr(spec, "manifest"):  # a loaded draft package
        return Speculation(DraftModel(spec, target))
    if hasattr(spec, "propose"):
        return Speculation(spec)
    raise GenerationError(f"speculate must be a drafter name, a draft model or None, not {type(spec).__name__}")


def verify(rows: np.ndarray, draft: Draft, sampling: SamplingConfig, rng: np.random.Generator,
           history: list[int]) -> tuple[list[int], int]:
    """The draft tokens the model keeps and the token after them, from the verification run's logits `rows`
    (row j: after the token before draft token j; the last row: after the whole draft)."""
    kept: list[int] = []
    for j, d in enumerate(draft.tokens):
        p = distribution(rows[j], sampling, np.asarray(history + kept, dtype=np.int64))
        if isinstance(p, int):  # greedy: kept when it is the model's own pick
            if p != d:
                return kept, p
            kept.append(d)
            continue
        q = draft.dists[j] if draft.dists is not None else d
        q_d = 1.0 if isinstance(q, int) else float(q[d])
        if q_d > 0 and rng.random() < min(1.0, float(p[d]) / q_d):
            kept.append(d)
            continue
        residual = p.copy()
        if isinstance(q, int):  # a point mass: max(0, p - q) is p without d
            residual[q] = 0.0
        else:  # a draft vocabulary may be shorter (padded differently): the rest has q = 0
            residual = np.maximum(residual - np.pad(q, (0, max(0, p.size - q.size)))[:p.size], 0.0)
        total = residual.sum()
        return kept, draw(residual / total if total > 0 else p, rng)
    last = distribution(rows[len(draft.tokens)], sampling, np.asarray(history + kept, dtype=np.int64))
    return kept, draw(last, rng)
