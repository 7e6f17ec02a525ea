"""`edgelm export | run | bench | info | demo`. Each subcommand imports its part lazily.

Errors edgelm raises on purpose print as one line, `edgelm: error: ...`, with a non-zero exit code;
set EDGELM_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

from edgelm.errors import EdgeLMError, UsageError


def _cmd_export(args) -> int:
    from edgelm.export import ExportConfig, QuantConfig, export_model, export_synthetic

    if bool(args.model) == bool(args.synthetic):
        raise UsageError("give either MODEL (an HF folder or .gguf file) or --synthetic PRESET")
    quant = QuantConfig(
        **_given(args, block_size="block_size", accuracy_level="accuracy_level"),
        **({"symmetric": False} if args.asymmetric else {}),
    )
    config = ExportConfig(
        **_given(args, quant="quant"), quant_config=quant, force=args.force, progress=not args.quiet
    )
    if args.synthetic:
        manifest = export_synthetic(args.synthetic, args.output, config, seed=args.seed)
    else:
        manifest = export_model(args.model, args.output, config)
    size = sum(f.bytes for f in manifest.files.values()) / (1 << 20)
    print(f"wrote {args.output}: {manifest.architecture}, {manifest.quantization.mode}, {size:.1f} MiB")
    return 0


def _cmd_run(args) -> int:
    from edgelm.runtime import load

    model = load(args.package, ep=args.ep, threads=args.threads)
    sampling = _given(args, temperature="temperature", top_k="top_k", top_p="top_p",
                      repetition_penalty="repetition_penalty", seed="seed")
    ids = model.encode_prompt(args.prompt, chat=args.chat)
    if args.json:
        out = list(model.stream_ids(ids, max_new_tokens=args.max_new_tokens, ignore_eos=args.ignore_eos, **sampling))
        print(json.dumps({"prompt_ids": ids, "token_ids": out, "text": model.tokenizer.decode(out)}))
        return 0
    from edgelm.runtime.tokenizer import StreamDecoder

    pieces = StreamDecoder(model.tokenizer)
    stream = model.stream_ids(ids, max_new_tokens=args.max_new_tokens, ignore_eos=args.ignore_eos, **sampling)
    for token in stream:
        sys.stdout.write(pieces.push(token))
        sys.stdout.flush()
    sys.stdout.write(pieces.flush() + "\n")
    return 0


def _cmd_bench(args) -> int:
    from edgelm.bench import BenchConfig, run_bench
    from edgelm.bench.report import markdown, write_json

    config = BenchConfig(
        **_given(args, prompt_tokens="p", gen_tokens="n", threads="t", repetitions="r", ep="ep")
    )
    rows = [run_bench(package, config) for package in args.package]
    print(markdown(rows))
    if args.json:
        write_json(rows, args.json)
    return 0


def _cmd_info(args) -> int:
    from edgelm.info import describe_environment, describe_package

    print(describe_package(args.package) if args.package else describe_environment())
    return 0


def _cmd_demo(args) -> int:
    from edgelm.demo import run_demo

    return run_demo(args.workdir, prompt=args.prompt)


def _given(args, **names: str) -> dict:
    """Config kwargs for the flags the user gave (None means: keep the config's default)."""
    return {key: getattr(args, attr) for key, attr in names.items() if getattr(args, attr) is not None}


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


def build_parser() -> argparse.ArgumentParser:
    from edgelm.bench.config import BenchConfig
    from edgelm.export.config import ExportConfig, QuantConfig
    from edgelm.export.presets import PRESETS
    from edgelm.export.quantize import quant_modes

    ed, qd, bd = _defaults(ExportConfig), _defaults(QuantConfig), _defaults(BenchConfig)
    parser = argparse.ArgumentParser(prog="edgelm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="HF folder, .gguf file or synthetic preset -> edgelm package")
    p.add_argument("model", nargs="?", help="Hugging Face model folder or .gguf file")
    p.add_argument("-o", "--output", required=True, help="package folder to create")
    p.add_argument("--quant", choices=quant_modes(), help=f"weights precision (default {ed['quant']})")
    p.add_argument("--synthetic", metavar="PRESET", choices=list(PRESETS),
                   help=f"build a published config with random weights: {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    p.add_argument("--block-size", type=int, help=f"int4/int8 block size (default {qd['block_size']})")
    p.add_argument("--accuracy-level", type=int, help=f"MatMulNBits accuracy level (default {qd['accuracy_level']})")
    p.add_argument("--asymmetric", action="store_true", help="int4/int8 with zero points (default symmetric)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="generate from a package, streaming tokens")
    p.add_argument("package")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the package's chat template")
    p.add_argument("--max-new-tokens", type=int, help="default: the package's")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the package's)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")
    p.add_argument("--ep", default="cpu", help="execution provider (default cpu)")
    p.add_argument("-t", "--threads", type=int, help="intra-op threads (default: physical cores)")
    p.add_argument("--json", action="store_true", help="print prompt ids, token ids and text as JSON")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("bench", help="load time, TTFT, prefill and decode speed, peak RSS")
    p.add_argument("package", nargs="+")
    p.add_argument("-p", type=int, help=f"prompt tokens (default {bd['prompt_tokens']})")
    p.add_argument("-n", type=int, help=f"generated tokens (default {bd['gen_tokens']})")
    p.add_argument("-t", type=int, help="threads (default: physical cores)")
    p.add_argument("-r", type=int, help=f"repetitions after warm-up (default {bd['repetitions']})")
    p.add_argument("--ep", help=f"execution provider (default {bd['ep']})")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("info", help="versions and providers, or a package's manifest")
    p.add_argument("package", nargs="?")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="SmolLM2-135M (shipped on PyPI): export, chat, benchmark")
    p.add_argument("--workdir", default="build/demo", help="where the converted model and package go")
    p.add_argument("--prompt", default="What is the capital of France?")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeLMError as exc:
        if os.environ.get("EDGELM_DEBUG"):
            raise
        print(f"edgelm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgelm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
