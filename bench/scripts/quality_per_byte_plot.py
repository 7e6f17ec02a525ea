"""Draw KL divergence against file size for edgelm's and llama.cpp's formats (docs/quality-per-byte.png) from
the measured rows in docs/quality-per-byte.json; decode tok/s as labels. Reproduce the rows with
bench/scripts/quality_per_byte.sh.

    python bench/scripts/quality_per_byte_plot.py [docs/quality-per-byte.json] [docs/quality-per-byte.png]
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main(source: Path, out: Path) -> None:
    data = json.loads(source.read_text(encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for engine, colour, marker in (("llama.cpp", "tab:orange", "s"), ("edgelm", "tab:blue", "o")):
        rows = sorted((r for r in data["rows"] if r["engine"] == engine), key=lambda r: r["mib"])
        ax.plot([r["mib"] for r in rows], [r["kld"] for r in rows], marker=marker, color=colour, label=engine,
                linestyle="none", markersize=7)
        for r in rows:
            speed = f", {r['decode_tps']:.0f} tok/s" if r.get("decode_tps") else ""
            ax.annotate(f"{r['format']}{speed}", (r["mib"], r["kld"]), textcoords="offset points", xytext=(6, 4),
                        fontsize=8, color=colour)
    ax.set_yscale("log")
    ax.set_xlabel("package / file size (MiB, tokenizer included)")
    ax.set_ylabel("mean KL divergence from full precision (log)")
    ax.set_title("SmolLM2-135M-Instruct: how much of the model each format keeps per byte", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    fig.text(0.01, 0.01, data["scoring"] + "; decode: " + data["speed"], fontsize=6, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else ROOT / "docs/quality-per-byte.json",
         Path(args[1]) if len(args) > 1 else ROOT / "docs/quality-per-byte.png")
