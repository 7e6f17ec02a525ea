"""Printers over BenchRow, all from the same rows: md, csv, json, jsonl; and the readers for each."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

from edgelm.bench.schema import BenchRow
from edgelm.errors import BenchError, first_line


def _opt(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


COLUMNS: tuple[tuple[str, Callable[[BenchRow], str]], ...] = (
    ("engine", lambda r: r.engine),
    ("model", lambda r: r.model),
    ("quant", lambda r: r.quant),
    ("ep", lambda r: r.ep + ("" if r.ep_node_share in (None, 1.0) else f" ({r.ep_node_share:.0%} of nodes)")),
    ("threads", lambda r: str(r.threads)),
    ("test", lambda r: f"pp{r.pp}+tg{r.tg}"),
    ("load s", lambda r: _opt(r.load_s, ".2f")),
    ("TTFT ms", lambda r: f"{r.ttft_ms.mean:.1f} ± {r.ttft_ms.std:.1f}"),
    ("prefill tok/s", lambda r: f"{r.prefill_tps.mean:.1f} ± {r.prefill_tps.std:.1f}"),
    ("decode ms/tok p50 / p90", lambda r: f"{r.decode_ms_per_token.median:.2f} / {r.decode_ms_p90:.2f}"),
    ("decode tok/s", lambda r: f"{r.decode_tps.mean:.1f} ± {r.decode_tps.std:.1f}"),
    ("GB/s", lambda r: _opt(r.bandwidth_gbs, ".2f")),
    ("% roofline", lambda r: f"{r.bandwidth_gbs / r.roofline_gbs:.0%} of {r.roofline_gbs:.1f}"
     if r.bandwidth_gbs and r.roofline_gbs else ""),
    ("peak RSS MiB", lambda r: f"{r.peak_rss_mib:.0f}"),
    ("KV MiB", lambda r: _opt(r.kv_cache_mib, ".1f")),
    ("size MiB", lambda r: _opt(r.package_mib, ".1f")),
    ("ppl", lambda r: _opt(r.perplexity, ".2f")),
    ("agree", lambda r: _opt(r.agreement, ".3f")),
)


# shown only when a row has them: where a fleet row ran (edgelm.fleet)
OPTIONAL_COLUMNS: tuple[tuple[str, Callable[[BenchRow], str]], ...] = (
    ("device", lambda r: str(r.provenance.get("device", ""))),
    ("row", lambda r: str(r.provenance.get("fleet", {}).get("label", ""))),
)


def to_markdown(rows: list[BenchRow]) -> str:
    columns = [c for c in OPTIONAL_COLUMNS if any(c[1](r) for r in rows)] + list(COLUMNS)
    head = [name for name, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def from_markdown(text: str) -> list[dict[str, str]]:
    """The table's cells per row, by column name (Markdown holds rounded figures, not whole rows)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def to_csv(rows: list[BenchRow]) -> str:
    flat = [r.to_flat() for r in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def from_csv(text: str) -> list[BenchRow]:
    return [BenchRow.from_flat(d) for d in csv.DictReader(io.StringIO(text))]


def to_json(rows: list[BenchRow]) -> str:
    return json.dumps([r.to_dict() for r in rows], indent=2) + "\n"


def from_json(text: str) -> list[BenchRow]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise TypeError(f"expected a JSON list of rows, got {type(data).__name__}")
    return [BenchRow.from_dict(d) for d in data]


def to_jsonl(rows: list[BenchRow]) -> str:
    return "".join(json.dumps(r.to_dict()) + "\n" for r in rows)


def from_jsonl(text: str) -> list[BenchRow]:
    return [BenchRow.from_dict(json.loads(ln)) for ln in text.splitlines() if ln.strip()]


PRINTERS = {"md": to_markdown, "csv": to_csv, "json": to_json, "jsonl": to_jsonl}
READERS = {"csv": from_csv, "json": from_json, "jsonl": from_jsonl}


def render(rows: list[BenchRow], fmt: str) -> str:
    if fmt not in PRINTERS:
        raise BenchError(f"unknown output format {fmt!r}; choose one of: {', '.join(PRINTERS)}")
    return PRINTERS[fmt](rows)


def read_rows(path: str | Path) -> list[BenchRow]:
    """Rows from a .json, .jsonl or .csv file written by `edgelm bench`."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in READERS:
        raise BenchError(f"cannot read {path}: use a .json, .jsonl or .csv file written by edgelm bench")
    if not path.is_file():
        raise BenchError(f"{path} does not exist")
    try:
        rows = READERS[fmt](path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is not an edgelm bench file ({type(exc).__name__}: {first_line(exc, 120)})") from None
    if not rows:
        raise BenchError(f"{path} holds no bench rows; nothing to compare")
    return rows


def ratios(rows: list[BenchRow]) -> list[str]:
    """edgelm against each peer that ran beside it (same package and configuration)."""
    ours = {r.job(): r for r in rows if r.engine == "edgelm"}
    lines = []
    for r in rows:
        base = ours.get(r.job())
        if r.engine == "edgelm" or base is None:
            continue
        lines.append(
            f"edgelm {base.quant} vs {r.engine} ({r.model}, {r.ep}, pp{r.pp}+tg{r.tg}): decode tok/s "
            f"{base.decode_tps.mean / r.decode_tps.mean:.2f}x, TTFT {base.ttft_ms.mean / r.ttft_ms.mean:.2f}x, "
            f"peak RSS {base.peak_rss_mib / r.peak_rss_mib:.2f}x"
        )
    return lines
