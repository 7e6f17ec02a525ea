"""PNG plots of bench rows: speed against prompt length per configuration, and memory per configuration."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from edgelm.bench.schema import BenchRow
from edgelm.errors import BenchError


def _label(r: BenchRow) -> str:
    return f"{r.engine} {r.model} {r.quant} {r.ep} t{r.threads or 'auto'}"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib (pip install 'edgelm[bench]')") from None
    return plt


def write_plots(rows: list[BenchRow], folder: str | Path) -> list[Path]:
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[BenchRow]] = defaultdict(list)
    for r in rows:
        series[_label(r)].append(r)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: r.pp)
        pp = [r.pp for r in rs]
        axes[0].errorbar(pp, [r.prefill_tps.mean for r in rs], [r.prefill_tps.std for r in rs], marker="o", label=label)
        axes[1].errorbar(pp, [r.decode_tps.mean for r in rs], [r.decode_tps.std for r in rs], marker="o", label=label)
    for ax, title in zip(axes, ("prefill tok/s", "decode tok/s")):
        ax.set(xlabel="prompt tokens (pp)", ylabel=title, title=f"{title} vs prompt length")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    speed = folder / "speed_vs_prompt.png"
    fig.savefig(speed, dpi=110)
    plt.close(fig)

    labels = list(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4.5))
    peak = [max(r.peak_rss_mib for r in series[k]) for k in labels]
    size = [max((r.package_mib or 0) for r in series[k]) for k in labels]
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], peak, width=0.4, label="peak RSS MiB")
    ax.bar([i + 0.2 for i in x], size, width=0.4, label="package MiB")
    ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=7)
    ax.set(ylabel="MiB", title="memory per configuration")
    ax.legend()
    fig.tight_layout()
    memory = folder / "memory.png"
    fig.savefig(memory, dpi=110)
    plt.close(fig)
    return [speed, memory]


def speed_vs_quality(rows: list[BenchRow], path: str | Path) -> Path:
    """One figure: decode tok/s against perplexity, a colour per device and a marker per target, each point a
    package (fleet rows)."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[BenchRow]] = defaultdict(list)
    for r in rows:
        fleet = r.provenance.get("fleet", {})
        groups[str(r.provenance.get("device", r.ep)), str(fleet.get("target", ""))].append(r)
    devices = sorted({d for d, _ in groups})
    targets = sorted({t for _, t in groups})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "os^DvP*X"
    fig, ax = plt.subplots(figsize=(7, 5))
    for (device, target), rs in sorted(groups.items()):
        points = [r for r in rs if r.perplexity is not None]
        ax.scatter([r.decode_tps.median for r in points], [r.perplexity for r in points], s=36,
                   color=colours[devices.index(device) % len(colours)],
                   marker=markers[targets.index(target) % len(markers)],
                   label=f"{device} · {target}" if target else device)
        for r in points:
            name = r.provenance.get("fleet", {}).get("label", r.model).split("@")[0]
            ax.annotate(name, (r.decode_tps.median, r.perplexity), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set(xlabel="decode tok/s (median of rounds)", ylabel="perplexity (shipped corpus; lower is better)",
           title="speed vs quality: a colour per device, a marker per target")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="device · target")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
