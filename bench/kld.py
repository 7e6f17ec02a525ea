"""KL divergence to a reference, scored exactly as llama.cpp's `llama-perplexity --kl-divergence` scores it, so
an edgelm package's figure can be set beside a GGUF file's.

    text      tokenized whole (a BOS first where the model adds one), cut into chunks of n_ctx tokens (default
              256; the tail that does not fill a chunk is dropped)
    chunk     run from an empty cache; where the model adds a BOS, the chunk's first token is replaced by it
    scored    the logits at positions n_ctx/2 .. n_ctx-2 of each chunk, each predicting the next token:
              n_ctx - 1 - n_ctx/2 positions a chunk (127 of 256)
    figures   mean KL(reference || candidate) with its standard error, median, 99th percentile and maximum;
              "same top" (the share of positions where both argmaxes agree); PPL of each on the scored tokens;
              mean ln(PPL(candidate) / PPL(reference))

The default text is none that calibration or tests read: the Apache-2.0 and MPL-2.0 license texts that
Debian ships in /usr/share/common-licenses, concatenated (~6k tokens for SmolLM2). A logit source is anything
with `logits(ids) -> (len(ids), vocab)` float array, run from an empty cache: an edgelm package, an HF folder
through transformers, a GGUF file through llama-cpp-python (`edgelm.bench.engines.llamacpp`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgelm.errors import BenchError
from edgelm.runtime.sampling import log_softmax

LICENSES = Path("/usr/share/common-licenses")
LICENSE_TEXTS = ("Apache-2.0", "MPL-2.0")
N_CTX = 256


def license_text() -> str:
    """The default scoring text: the Apache-2.0 and MPL-2.0 licenses from Debian's common-licenses, joined."""
    paths = [LICENSES / name for name in LICENSE_TEXTS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BenchError(f"{', '.join(missing)} not found (Debian's base-files ships them); give a text with --text")
    return "\n\n".join(p.read_text(encoding="utf-8") for p in paths)


def chunks(ids: list[int], n_ctx: int = N_CTX, bos: int | None = None) -> list[list[int]]:
    """The full chunks of n_ctx tokens, each one's first token replaced by `bos` where the model adds one."""
    if n_ctx < 4:
        raise BenchError(f"n_ctx must be at least 4 tokens, not {n_ctx}")
    out = [list(ids[i:i + n_ctx]) for i in range(0, len(ids) - n_ctx + 1, n_ctx)]
    if not out:
        raise BenchError(f"the text has {len(ids)} tokens, fewer than one chunk of {n_ctx}; give a longer text")
    if bos is not None:
        for chunk in out:
            chunk[0] = bos
    return out


@dataclass
class Scores:
    """Per-position figures of one candidate against one reference, accumulated chunk by chunk."""

    kld: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)
    nll: list[np.ndarray] = field(default_factory=list)
    nll_ref: list[np.ndarray] = field(default_factory=list)

    def add(self, ref_logits: np.ndarray, logits: np.ndarray, chunk: list[int]) -> None:
        """Score one chunk: logits (n_ctx, vocab) of each, positions n_ctx/2 .. n_ctx-2."""
        n = len(chunk)
        first = n // 2
        if ref_logits.shape != logits.shape or logits.shape[0] != n:
            raise BenchError(f"logits of shape {logits.shape} and {ref_logits.shape} for a chunk of {n} tokens: "
                             "compare models of the same vocabulary")
        for name, rows in (("candidate", logits), ("reference", ref_logits)):
            if not np.isfinite(rows[first:n - 1]).all():
                raise BenchError(f"the {name}'s logits hold NaN or infinity: no divergence can be scored")
        p = log_softmax(np.asarray(ref_logits[first:n - 1], dtype=np.float64))
        q = log_softmax(np.asarray(logits[first:n - 1], dtype=np.float64))
        nxt = np.asarray(chunk[first + 1:n])
        rows = np.arange(len(nxt))
        self.kld.append((np.exp(p) * (p - q)).sum(-1))
        self.same_top.append(p.argmax(-1) == q.argmax(-1))
        self.nll.append(-q[rows, nxt])
        self.nll_ref.append(-p[rows, nxt])

    def result(self, chunks_scored: int, n_ctx: int) -> KldResult:
        kld = np.concatenate(self.kld)
        top = np.concatenate(self.same_top)
        nll, nll_ref = np.concatenate(self.nll), np.concatenate(self.nll_ref)
        n = len(kld)
        return KldResult(
            kld=float(kld.mean()), kld_err=float(kld.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
            kld_median=float(np.median(kld)), kld_p99=float(np.percentile(kld, 99)), kld_max=float(kld.max()),
            same_top=float(top.mean()), same_top_err=float(np.sqrt(top.mean() * (1 - top.mean()) / max(n - 1, 1))),
            ppl=float(np.exp(nll.mean())), ppl_ref=float(np.exp(nll_ref.mean())),
            ln_ppl_ratio=float((nll - nll_ref).mean()), positions=n, chunks=chunks_scored, n_ctx=n_ctx)


@dataclass(frozen=True)
class KldResult:
    kld: float  # mean KL(reference || candidate), nats
    kld_err: float  # its standard error
    kld_median: float
    kld_p99: float
    kld_max: float
    same_top: float  # share of positions whose argmax agrees with the reference's
    same_top_err: float
    ppl: float  # the candidate's perplexity on the scored tokens
    ppl_ref: float
    ln_ppl_ratio: float
    positions: int
    chunks: int
    n_ctx: int

    def line(self) -> str:
        return (f"KLD {self.kld:.4f} ± {self.kld_err:.4f} (median {self.kld_median:.4f}, 99% {self.kld_p99:.3f}), "
                f"same top {100 * self.same_top:.1f} ± {100 * self.same_top_err:.1f}%, PPL {self.ppl:.3f} "
                f"(reference {self.ppl_ref:.3f}); {self.positions} positions of {self.chunks} chunks of {self.n_ctx}")


def score(reference, candidates: dict, ids: list[int], n_ctx: int = N_CTX, bos: int | None = None,
          progress=None) -> dict[str, KldResult]:
    """Each candidate (name -> logit source) against `reference`, chunk by chunk (the reference's logits of a
    chunk are computed once and dropped after it: memory stays one chunk's logits per source)."""
    parts = chunks(ids, n_ctx, bos)
    scores = {name: Scores() for name in candidates}
    for chunk in parts:
        ref = np.asarray(reference.logits(chunk), dtype=np.float32)
        for name, source in candidates.items():
            scores[name].add(ref, np.asarray(source.logits(chunk), dtype=np.float32), chunk)
        if progress is not None:
            progress.update(1)
    return {name: s.result(len(parts), n_ctx) for name, s in scores.items()}
