"""`edgelm bench compare OLD NEW`: which figures moved beyond the noise measured in the runs themselves.

A change is flagged when the means differ by more than `z` standard errors of the difference (Welch:
sqrt(s_old^2/n_old + s_new^2/n_new), from each row's repetitions) and by more than `min_rel` relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import sqrt
from statistics import fmean, pstdev

from edgelm.bench.schema import BenchRow

# figure name -> (samples from a row, higher is better)
FIGURES = {
    "decode tok/s": (lambda r: [r.tg / s for s in r.samples["decode_s"]], True),
    "prefill tok/s": (lambda r: [r.pp / s for s in r.samples["prefill_s"]], True),
}


@dataclass(frozen=True)
class Change:
    key: tuple
    figure: str
    old: float
    new: float
    threshold: float
    better: bool

    @property
    def relative(self) -> float:
        return self.new / self.old - 1.0

    def line(self) -> str:
        engine, model, quant, ep, threads, pp, tg = self.key
        verdict = "improved" if self.better else "REGRESSED"
        return (f"{verdict}: {engine} {model} {quant} {ep} t{threads or 'auto'} pp{pp}+tg{tg} {self.figure} "
                f"{self.old:.2f} -> {self.new:.2f} ({self.relative:+.1%}, noise threshold ±{self.threshold:.2f})")


def compare(old: list[BenchRow], new: list[BenchRow], z: float = 3.0, min_rel: float = 0.02):
    """Changes beyond noise, and the keys present in only one of the runs."""
    before = {r.key(): r for r in old}
    changes, unmatched = [], [r.key() for r in new if r.key() not in before]
    for row in new:
        if row.key() not in before:
            continue
        for figure, (samples, higher_better) in FIGURES.items():
            a, b = samples(before[row.key()]), samples(row)
            ma, mb = fmean(a), fmean(b)
            threshold = z * sqrt(pstdev(a) ** 2 / len(a) + pstdev(b) ** 2 / len(b))
            if abs(mb - ma) > threshold and abs(mb / ma - 1.0) > min_rel:
                changes.append(Change(row.key(), figure, ma, mb, threshold, (mb > ma) == higher_better))
    return changes, unmatched
