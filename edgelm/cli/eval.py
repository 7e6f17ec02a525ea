"""`edgelm eval`: perplexity, agreement with and divergence from a reference; `--kld`: llama.cpp's KLD scoring."""

from __future__ import annotations

from pathlib import Path

from edgelm.cli.common import subcommand
from edgelm.errors import UsageError


def _read_text(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --text {name}: {exc}") from None


# the options of the perplexity/agreement mode, which --kld's llama-perplexity scoring does not read
NOT_KLD = (("--ref", "ref"), ("--chat", "chat"), ("--no-perplexity", "no_perplexity"), ("--window", "window"))


def run(args) -> int:
    if args.kld:
        unused = [flag for flag, attr in NOT_KLD if getattr(args, attr) not in (None, False)]
        if unused:
            raise UsageError(f"{unused[0]} is not used by --kld (chunks of --ctx tokens against REF); drop it")
        return _kld(args)
    if args.ctx is not None:
        raise UsageError("--ctx is the chunk length of --kld; give --kld REF, or --window for perplexity")
    if len(args.package) != 1:
        raise UsageError("give one package (several are compared with --kld REF)")
    from edgelm.bench.quality import WINDOW, evaluate

    args.window = WINDOW if args.window is None else args.window

    text = _read_text(args.text)
    q = evaluate(args.package[0], args.ref, window=args.window, ep=args.ep, chat=args.chat, progress=not args.quiet,
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


def _kld(args) -> int:
    from edgelm.bench.divergence import kld_table
    from edgelm.bench.kld import N_CTX

    text = _read_text(args.text)
    rows = kld_table(args.kld, args.package, text=text, n_ctx=args.ctx or N_CTX, ep=args.ep, progress=not args.quiet)
    print(f"| model | file MiB | KLD vs {Path(args.kld).name} | same top | PPL |")
    print("|---|---|---|---|---|")
    for name, size, r in rows:
        print(f"| {name} | {size / 2**20:.1f} | {r.kld:.4f} ± {r.kld_err:.4f} | {100 * r.same_top:.1f}% | {r.ppl:.3f} |")
    r = rows[0][2]
    print(f"{r.positions} positions ({r.chunks} chunks of {r.n_ctx}, second half of each scored, as "
          f"llama-perplexity --kl-divergence); reference PPL {r.ppl_ref:.3f}; text: "
          f"{args.text or 'Apache-2.0 + MPL-2.0 (/usr/share/common-licenses)'}")
    return 0


EXAMPLES = (
    "edgelm eval pkg-int4                          # perplexity on the shipped corpus",
    "edgelm eval pkg-int4 --ref hf-folder          # + greedy agreement with the source model",
    "edgelm eval pkg-int4 --ref pkg-fp32 --text notes.txt --chat",
    "edgelm eval --kld pkg-fp32 pkg-int4 pkg-int8  # KL divergence scored as llama-perplexity scores it",
    "edgelm eval --kld hf-folder pkg-int4 model.Q4_K_M.gguf   # GGUF rows need llama-cpp-python",
)


def add(sub) -> None:
    p = subcommand(sub, "eval", "perplexity on a text, agreement with and divergence from a reference", EXAMPLES)
    p.add_argument("package", nargs="+", help="the edgelm package to evaluate (with --kld: packages and .gguf files)")
    p.add_argument("--ref", metavar="REF", help="reference edgelm package or HF model folder")
    p.add_argument("--kld", metavar="REF", help="score every candidate's KL divergence from REF (a float package, an HF "
                   "folder or a GGUF file) as llama-perplexity --kl-divergence does: chunks of --ctx tokens, the "
                   "second half of each scored; text: the Apache-2.0 and MPL-2.0 licenses unless --text")
    p.add_argument("--ctx", type=int, help="--kld: tokens per chunk (default 256, llama-perplexity's -c)")
    p.add_argument("--window", type=int, help="tokens per perplexity window (default 256; not with --kld)")
    p.add_argument("--ep", default="cpu", help="execution provider running the package (default cpu)")
    p.add_argument("--chat", action="store_true",
                   help="agreement on held-out prompts through the chat template (not in the shipped corpus)")
    p.add_argument("--no-perplexity", action="store_true", help="agreement only (no text pass)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text for perplexity and divergence (default: the shipped "
                   "corpus; with --kld the license texts)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=run)
