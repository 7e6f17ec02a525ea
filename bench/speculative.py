"""Speculative-decoding benchmarks (`edgelm bench spec PACKAGE [--draft PACKAGE]`).

- `effective`: every prompt of the shipped sets (edgelm.bench.spec_prompts: grounded tasks, open-ended chat)
  answered greedily with plain decoding and with each drafter, interleaved prompt by prompt, in one process.
  Effective decode tok/s = generated tokens after the first / time from the first to the last token, summed
  over a set per round; medians and the spread (min-max) of the rounds. Each speculative answer is checked
  token for token against the plain one (greedy: they must be equal).
- `verify_cost`: one run of k + 1 tokens through the cache (what a verification of k draft tokens costs)
  against one decode step, after a 128-token prompt; and, with a draft package, its decode step against the
  model's: together they say which acceptance a drafter needs to win.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from edgelm.bench.spec_prompts import PROMPT_SETS
from edgelm.runtime.speculative import SpecStats


@dataclass
class ModeResult:
    """One (prompt set, mode): per round the set's effective decode tok/s; the drafts over all rounds."""

    prompt_set: str
    mode: str
    tps: list[float] = field(default_factory=list)
    stats: SpecStats = field(default_factory=SpecStats)
    tokens: int = 0
    mismatches: int = 0  # answers that differ from plain decoding's (greedy: must stay 0)

    @property
    def median(self) -> float:
        return statistics.median(self.tps)


def _answer(model, prompt: str, tokens: int, speculate) -> tuple[float, int, SpecStats | None]:
    """(seconds from the first token to the last, tokens after the first, drafts) of one greedy streamed answer."""
    start = time.perf_counter()
    first = None
    for event in model.chat([{"role": "user", "content": prompt}], stream=True, max_new_tokens=tokens,
                            temperature=0.0, ignore_eos=True, speculate=speculate, reuse_cache=False):
        if first is None and event.token_ids:
            first = time.perf_counter()
        last = event
    end = time.perf_counter()
    return end - (start if first is None else first), max(last.usage.completion_tokens - 1, 0), last.speculation


def effective(model, modes: dict[str, object], rounds: int = 3, tokens: int = 128,
              sets: tuple[str, ...] = ("grounded", "open"), progress=None) -> list[ModeResult]:
    """Effective decode speed per prompt set and mode (modes: name -> `speculate` value; "plain": None)."""
    results = {(s, m): ModeResult(s, m) for s in sets for m in modes}
    reference: dict[str, list[int]] = {}
    for r in range(rounds + 1):  # round 0 warms every mode up and is not recorded
        for s in sets:
            totals = {m: [0.0, 0] for m in modes}
            for prompt in PROMPT_SETS[s]:
                for m, spec in modes.items():
                    completion = model.chat([{"role": "user", "content": prompt}], max_new_tokens=tokens,
                                            temperature=0.0, ignore_eos=True, speculate=spec, reuse_cache=False) \
                        if r == 0 else None
                    if completion is not None:  # the warm-up round records each answer's ids
                        if m == "plain":
                            reference[prompt] = completion.token_ids
                        elif completion.token_ids != reference.get(prompt):
                            results[s, m].mismatches += 1
                        continue
                    seconds, n, stats = _answer(model, prompt, tokens, spec)
                    totals[m][0] += seconds
                    totals[m][1] += n
                    res = results[s, m]
                    res.tokens += n
                    if stats is not None:
                        res.stats.runs += stats.runs
                        res.stats.proposed += stats.proposed
                        res.stats.accepted += stats.accepted
                    if progress is not None:
                        progress.update(1)
            if r:
                for m, (seconds, n) in totals.items():
                    results[s, m].tps.append(n / seconds)
    return list(results.values())


def verify_cost(model, ks=(1, 2, 4, 8), reps: int = 10, prompt_tokens: int = 128) -> dict[int, float]:
    """Median seconds of one run of k + 1 tokens after `prompt_tokens` cached ones (k = 0: a decode step)."""
    decoder = model.decoder
    rng = np.random.default_rng(0)
    vocab = model.manifest.vocab_size
    prompt = rng.integers(0, vocab, prompt_tokens).tolist()
    decoder.reset()
    decoder.forward(prompt)
    times: dict[int, list[float]] = {k: [] for k in (0, *ks)}
    for _ in range(reps + 1):
        for k in times:
            ids = rng.integers(0, vocab, k + 1).tolist()
            decoder.truncate(prompt_tokens)
            start = time.perf_counter()
            decoder.forward(ids, last_only=False)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def report(package: str, draft: str | None = None, rounds: int = 3, tokens: int = 128, threads: int | None = None,
           ep: str = "cpu", progress: bool = True, prompts: bool = True) -> tuple[str, list[dict]]:
    """The markdown report and its rows as dicts (for --json); `prompts=False`: the verification cost (and the
    draft's break-even) only."""
    from edgelm.progress import as_progress
    from edgelm.runtime import load

    model = load(package, ep=ep, threads=threads)
    draft_model = load(draft, ep=ep, threads=threads) if draft else None
    modes = {"plain": None, "prompt-lookup": "prompt-lookup"}
    if draft_model is not None:
        modes["draft-model"] = draft_model
    sets = ("grounded", "open") if prompts else ()
    count = rounds * len(modes) * sum(len(PROMPT_SETS[s]) for s in sets)
    results = []
    if sets:
        with as_progress(progress).stage("speculative decoding: prompt sets x modes x rounds", count, "answer") as bar:
            results = effective(model, modes, rounds, tokens, sets, bar)
    cost = verify_cost(model)
    lines = [f"Speculative decoding, {package}: greedy, {tokens} tokens an answer, {rounds} rounds (+1 warm-up), "
             f"modes interleaved prompt by prompt", "",
             "| prompt set | mode | decode tok/s (median) | min-max | vs plain | acceptance | kept / run | "
             "answers != plain |", "|---|---|---|---|---|---|---|---|"] if sets else [f"Speculative decoding, {package}"]
    rows = []
    for s in sets:
        plain = next(r for r in results if r.prompt_set == s and r.mode == "plain").median
        for r in (x for x in results if x.prompt_set == s):
            spec = r.mode != "plain"
            lines.append(f"| {s} ({len(PROMPT_SETS[s])}) | {r.mode} | {r.median:.1f} | {min(r.tps):.1f}-"
                         f"{max(r.tps):.1f} | {r.median / plain:.2f}x | "
                         f"{f'{r.stats.acceptance:.2f}' if spec else ''} | "
                         f"{f'{r.stats.mean_accepted:.2f}' if spec else ''} | {r.mismatches} |")
            rows.append({"prompt_set": s, "mode": r.mode, "decode_tps_median": r.median, "decode_tps_rounds": r.tps,
                         "vs_plain": r.median / plain, "draft_source": r.mode if spec else None,
                         "acceptance": r.stats.acceptance if spec else None,
                         "mean_accepted": r.stats.mean_accepted if spec else None,
                         "verification_runs": r.stats.runs, "mismatches": r.mismatches})
    step = cost[0]
    lines += ["", "Verification cost (one run of k + 1 tokens after 128 cached, median of 10) in decode steps:", "",
              "| k | ms | decode steps |", "|---|---|---|"]
    lines += [f"| {k} | {t * 1e3:.2f} | {t / step:.2f} |" for k, t in cost.items()]
    rows.append({"verify_cost_ms": {k: t * 1e3 for k, t in cost.items()}})
    if draft_model is not None:
        draft_step = verify_cost(draft_model, ks=())[0]
        ratio = draft_step / step
        lines += ["", f"Draft package {draft}: a decode step {draft_step * 1e3:.2f} ms = {ratio:.2f} of the model's. "
                  "Drafting k tokens and verifying them costs k x that + the row above; it wins when more tokens "
                  "than that come out of a run (kept + 1):", ""]
        for k in (2, 4, 8):
            if k in cost:
                need = k * ratio + cost[k] / step - 1
                lines.append(f"- k = {k}: costs {k * ratio + cost[k] / step:.2f} steps: needs {need:.2f} kept a run "
                             f"({need / k:.0%} acceptance)")
        rows.append({"draft_step_ms": draft_step * 1e3, "draft_cost_ratio": ratio})
    return "\n".join(lines) + "\n", rows
