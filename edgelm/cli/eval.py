"""`edgelm eval`: perplexity, agreement with and divergence from a reference."""

from __future__ import annotations

from edgelm.cli.common import subcommand

from pathlib import Path

from edgelm.errors import UsageError


def run(args) -> int:
    from edgelm.bench.quality import evaluate

    text = None
    if args.text:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --text {args.text}: {exc}") from None
    q = evaluate(args.package, args.ref, window=args.window, ep=args.ep, chat=args.chat, progress=not args.quiet,
                 with_perplexity=not args.no_perplexity, text=text, divergence=True)
    where = args.text or "shipped corpus"
    if q.perplexity is not None:
        print(f"perplexity {q.perplexity:.3f} ({where}, windows of {args.window} tokens)")
    if q.kl is not None:
        print(f"vs {q.reference} on the same text: mean KL divergence {q.kl:.4f}, top-1 agreement {q.text_top1:.3f}")
    if q.agreement is not None:
        prompts = "held-out chat prompts" if args.chat else "plain prompts"
        print(f"greedy top-1 agreement with {q.reference} ({prompts}, 32 tokens each): {q.agreement:.3f}")
    return 0


EXAMPLES = (
    "edgelm eval pkg-int4                          # perplexity on the shipped corpus",
    "edgelm eval pkg-int4 --ref hf-folder          # + greedy agreement with the source model",
    "edgelm eval pkg-int4 --ref pkg-fp32 --text notes.txt --chat",
)


def add(sub) -> None:
    p = subcommand(sub, "eval", "perplexity on a text, agreement with and divergence from a reference", EXAMPLES)
    p.add_argument("package", help="the edgelm package to evaluate")
    p.add_argument("--ref", metavar="REF", help="reference edgelm package or HF model folder")
    p.add_argument("--window", type=int, default=256, help="tokens per perplexity window (default 256)")
    p.add_argument("--ep", default="cpu", help="execution provider running the package (default cpu)")
    p.add_argument("--chat", action="store_true",
                   help="agreement on held-out prompts through the chat template (not in the shipped corpus)")
    p.add_argument("--no-perplexity", action="store_true", help="agreement only (no text pass)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text for perplexity and divergence (default: the shipped "
                   "corpus)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=run)
