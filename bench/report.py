"""Printers over BenchRow: a Markdown table and JSON, from the same rows."""

from __future__ import annotations

import json
from pathlib import Path

from edgelm.bench.schema import BenchRow

COLUMNS = (
    ("model", lambda r: r.model),
    ("quant", lambda r: r.quant),
    ("ep", lambda r: r.ep),
    ("threads", lambda r: str(r.threads or "auto")),
    ("test", lambda r: f"pp{r.pp}+tg{r.tg}"),
    ("load s", lambda r: f"{r.load_s:.2f}"),
    ("TTFT ms", lambda r: f"{r.ttft_ms.mean:.1f} ± {r.ttft_ms.std:.1f}"),
    ("prefill tok/s", lambda r: f"{r.prefill_tps.mean:.1f} ± {r.prefill_tps.std:.1f}"),
    ("decode ms/tok (p50/p90)", lambda r: f"{r.decode_ms_per_token.median:.2f} / {r.decode_ms_p90:.2f}"),
    ("decode tok/s", lambda r: f"{r.decode_tps.mean:.1f} ± {r.decode_tps.std:.1f}"),
    ("peak RSS MiB", lambda r: f"{r.peak_rss_mib:.0f}"),
    ("size MiB", lambda r: f"{r.package_mib:.1f}"),
)


def markdown(rows: list[BenchRow]) -> str:
    head = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def write_json(rows: list[BenchRow], path: str | Path) -> None:
    Path(path).write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n", encoding="utf-8")
