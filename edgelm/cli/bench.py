"""`edgelm bench`: load, TTFT, prefill/decode speed, memory; `bench compare OLD NEW`; `bench chat PACKAGE`."""

from __future__ import annotations

import sys
from pathlib import Path

from edgelm.cli.common import add_provider_flags, csv, defaults, given, ints, names, subcommand, writable_file
from edgelm.errors import UsageError


def run(args) -> int:
    if args.package[0] == "compare":
        return _bench_compare(args)
    if args.package[0] == "chat":
        return _bench_chat(args)
    if args.package[0] == "spec":
        return _bench_spec(args)
    from dataclasses import replace

    from edgelm.bench import BenchConfig, run_bench
    from edgelm.bench.report import ratios, render

    _check_bench_outputs(args)
    args.ep = names(args.ep) if args.ep else None
    config = BenchConfig(**given(args, prompt_tokens="p", gen_tokens="n", threads="t", eps="ep",
                                  repetitions="r"), strict=args.strict,
                         provider_options=tuple(args.ep_option or ()))
    peers, notes = _peers(args)
    result = run_bench(args.package, config, peers=peers, progress=not args.quiet)
    rows = result.rows
    if args.eval or args.ref:
        from edgelm.bench.quality import evaluate

        quality = {p: evaluate(p, args.ref, progress=not args.quiet) for p in args.package}
        rows = [replace(r, perplexity=quality[r.package].perplexity, agreement=quality[r.package].agreement)
                if r.engine == "edgelm" else r for r in rows]
    print(render(rows, args.output), end="")
    for line in ratios(rows) + notes + result.notes:
        print(line)
    if args.json:
        try:
            Path(args.json).write_text(render(rows, "json"), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json {args.json}: cannot write it ({exc.strerror}); the table is above") from None
    if args.plot:
        from edgelm.bench.plots import write_plots

        for path in write_plots(rows, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _peers(args) -> tuple[dict[str, str | None], list[str]]:
    """--vs names -> each peer's target (None: the package itself), and notes for peers that cannot run."""
    from edgelm.bench.engines import ENGINES

    targets = {"optimum": (args.optimum_package, None), "torch": (args.hf, "--hf DIR"),
               "genai": (args.genai_model, "--genai-model DIR"), "llamacpp": (args.gguf, "--gguf FILE")}
    if args.llama_bench:  # the worker processes find llama-bench here (edgelm.bench.engines.llamacpp_engine)
        import os

        os.environ["EDGELM_LLAMA_BENCH"] = args.llama_bench
    peers, notes = {}, []
    for name in args.vs or ():
        if name not in targets:
            raise UsageError(f"--vs {name}: peers are {', '.join(n for n in ENGINES if n != 'edgelm')}")
        target, flag = targets[name]
        if flag and target is None:
            notes.append(f"{name} skipped: give {flag}")
        else:
            peers[name] = target
    return peers, notes


def _check_bench_outputs(args) -> None:
    """Where results go, checked before minutes of benchmarking."""
    if args.json:
        writable_file(args.json, "--json")
    for flag, folder in (("--hf", args.hf), ("--genai-model", args.genai_model), ("--ref", args.ref)):
        if folder and not Path(folder).is_dir():  # a hub id is not a folder: edgelm never downloads
            raise UsageError(f"{flag} {folder} is not a local folder (edgelm does not download models)")
    if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
        raise UsageError(f"--plot {args.plot} is a file; give a folder for the PNG plots")


def _bench_chat(args) -> int:
    """Multi-turn TTFT with and without cache reuse; edgelm serve's overhead vs the in-process API."""
    from edgelm.bench.chat import report

    if len(args.package) != 2:
        raise UsageError("usage: edgelm bench chat PACKAGE")
    threads = args.t[0] if args.t else None
    print(report(args.package[1], rounds=args.r or 5, threads=threads, ep=args.ep or "cpu"), end="")
    return 0


def _bench_spec(args) -> int:
    """Speculative decoding on shipped prompt sets vs plain; verification cost; a draft package's break-even."""
    import json

    from edgelm.bench.speculative import report

    if len(args.package) != 2:
        raise UsageError("usage: edgelm bench spec PACKAGE [--draft PACKAGE]")
    _check_bench_outputs(args)
    if args.draft and not Path(args.draft).is_dir():
        raise UsageError(f"--draft {args.draft} is not a package folder")
    text, rows = report(args.package[1], args.draft, rounds=args.r or 3, tokens=args.n[0] if args.n else 128,
                        threads=args.t[0] if args.t else None, ep=(args.ep or "cpu"), progress=not args.quiet,
                        prompts=not args.cost_only)
    print(text, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def _bench_compare(args) -> int:
    from edgelm.bench.compare import compare
    from edgelm.bench.report import read_rows

    if len(args.package) != 3:
        raise UsageError("usage: edgelm bench compare OLD NEW (each .json, .jsonl or .csv)")
    changes, unmatched = compare(read_rows(args.package[1]), read_rows(args.package[2]))
    for change in changes:
        print(change.line())
    for key in unmatched:
        print(f"new configuration (no baseline): {key}")
    if not changes:
        print("no change beyond the measured noise")
    return 1 if any(not c.better for c in changes) else 0


EXAMPLES = (
    "edgelm bench pkg-int4 -p 128 -n 128 -t 2 -r 5 --json rows.json",
    "edgelm bench pkg-int4 pkg-int8 -p 128,512 -t 1,2 -o csv     # every combination, one row each",
    "edgelm bench pkg-int4 --vs torch --hf hf-folder --eval       # a peer, interleaved; + perplexity",
    "edgelm bench compare old.jsonl new.jsonl                     # changes beyond the measured noise",
    "edgelm bench chat pkg-int4 -t 2                              # multi-turn TTFT, edgelm serve overhead",
    "edgelm bench spec pkg-int4 -t 2 --draft small-int4          # speculative decoding vs plain",
)


def add(sub) -> None:
    from edgelm.bench.config import BenchConfig

    bd = defaults(BenchConfig)
    p = subcommand(sub, "bench", "load, TTFT, prefill/decode speed, memory; `bench compare OLD NEW` diffs two runs",
                   EXAMPLES, description="Comma lists sweep every combination. Timed: prefill of -p random token "
                   "ids to the first token, then -n single-token decode steps (argmax each); tokenization excluded.")
    p.add_argument("package", nargs="+", help="package folder(s); or: compare OLD NEW; or: chat PACKAGE (multi-turn "
                   "TTFT with/without cache reuse, edgelm serve overhead); or: spec PACKAGE (speculative decoding "
                   "on shipped prompt sets vs plain, verification cost)")
    p.add_argument("-p", type=ints, help=f"prompt tokens, e.g. 128,512 (default {csv(bd['prompt_tokens'])})")
    p.add_argument("-n", type=ints, help=f"generated tokens (default {csv(bd['gen_tokens'])})")
    p.add_argument("-t", type=ints, help="threads, e.g. 1,2 (default: physical cores)")
    p.add_argument("-r", type=int, help=f"repetitions after warm-up (default {bd['repetitions']})")
    add_provider_flags(p, f"execution providers, e.g. cpu,openvino,qnn or auto (default {csv(bd['eps'])})")
    p.add_argument("-o", "--output", default="md", choices=["md", "csv", "json", "jsonl"], help="stdout format")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots (speed vs prompt length, memory)")
    p.add_argument("--vs", type=names, help="peers in the same run: genai,optimum,torch,llamacpp")
    p.add_argument("--hf", metavar="DIR", help="HF model folder for the torch peer")
    p.add_argument("--optimum-package", metavar="DIR",
                   help="an optimum-made edgelm package for the optimum peer (default: the package itself, "
                   "when it was exported with --backend optimum)")
    p.add_argument("--genai-model", metavar="DIR", help="onnxruntime-genai model folder for the genai peer")
    p.add_argument("--gguf", metavar="FILE", help="a GGUF file for the llamacpp peer (timed by llama.cpp's llama-bench)")
    p.add_argument("--llama-bench", metavar="PATH", help="llama.cpp's llama-bench binary, or its build folder "
                   "(default: $EDGELM_LLAMA_BENCH, else llama-bench on PATH)")
    p.add_argument("--eval", action="store_true", help="add perplexity (and --ref agreement) columns")
    p.add_argument("--ref", metavar="REF", help="reference package or HF folder for agreement")
    p.add_argument("--draft", metavar="DIR", help="bench spec: a smaller package sharing the tokenizer, as a draft "
                   "model")
    p.add_argument("--cost-only", action="store_true", help="bench spec: the verification cost and a draft's "
                   "break-even only, no prompt sets (random-weight packages: their acceptance would mean nothing)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
