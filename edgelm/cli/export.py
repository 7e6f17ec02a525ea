"""`edgelm export`: HF folder, .gguf file or synthetic preset -> package."""

from __future__ import annotations

from edgelm.cli.common import defaults, given, subcommand
from edgelm.errors import UsageError


def run(args) -> int:
    from edgelm.export import ExportConfig, QuantConfig, export_model, export_synthetic
    from edgelm.export.config import NpuConfig
    from edgelm.info import quality_line

    if bool(args.model) == bool(args.synthetic):
        raise UsageError("give either MODEL (an HF folder or .gguf file) or --synthetic PRESET")
    if args.asymmetric and args.symmetric:
        raise UsageError("give --symmetric or --asymmetric, not both")
    npu_target = args.target == "npu-qnn"
    shared = given(args, block_size="block_size", calibration="calibration")  # the npu target's own when it is chosen
    quant = QuantConfig(
        **given(args, mlp_block_size="mlp_block_size", accuracy_level="accuracy_level"),
        **({} if npu_target else {**shared, **given(args, calibration_samples="calibration_samples")}),
        **({"symmetric": False} if args.asymmetric else {"symmetric": True} if args.symmetric else {}),
    )
    npu = NpuConfig(**given(args, context="context", chunk="chunk", activations="activations",
                             weights="qdq_weights", w4_max_cost="w4_max_cost"),
                    **({**shared, **given(args, calibration_samples="calibration_samples")} if npu_target else {}),
                    **({"compile": False} if args.no_compile else {}),
                    **({"keep_qdq": True} if args.keep_qdq else {}),
                    **({"per_channel": False} if args.per_tensor else {}))
    if args.target == "npu-qnn" and args.quant:
        raise UsageError("--quant is for the cpu target; npu-qnn packages are QDQ (see --activations/--qdq-weights)")
    config = ExportConfig(
        **given(args, quant="quant", backend="backend", target="target"), quant_config=quant, npu=npu,
        force=args.force, progress=not args.quiet, check=not args.no_check, min_agreement=args.min_agreement,
        kld=args.kld,
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


EXAMPLES = (
    "edgelm export path/to/hf-model -o pkg-int4                 # int4, native fused builder",
    "edgelm export model.gguf -o pkg-int8 --quant int8",
    "edgelm export --synthetic qwen2.5-0.5b -o qwen-int4         # a published shape, random weights",
    "edgelm export path/to/hf-model -o pkg-npu --target npu-qnn  # static QDQ graph for the Qualcomm HTP",
)


def add(sub) -> None:
    from edgelm.export.config import ExportConfig, NpuConfig, QuantConfig
    from edgelm.export.pipeline import TARGETS
    from edgelm.export.presets import PRESETS
    from edgelm.export.quantize import CALIBRATIONS, quant_modes

    ed, qd, nd = defaults(ExportConfig), defaults(QuantConfig), defaults(NpuConfig)
    p = subcommand(sub, "export", "HF folder, .gguf file or synthetic preset -> edgelm package", EXAMPLES)
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
    sym = {True: " (the default)", False: ""}
    p.add_argument("--asymmetric", action="store_true",
                   help=f"int4/int8 with a zero point per block{sym[not qd['symmetric']]}")
    p.add_argument("--symmetric", action="store_true",
                   help=f"int4/int8 without zero points{sym[qd['symmetric']]}")
    p.add_argument("--calibration", choices=CALIBRATIONS,
                   help="int4/int8 weight preparation (default auto: awq for int4, gptq for the *-gptq formats, else "
                   "none; awq: activation-aware scales from a first pass over the shipped corpus; gptq: awq, then "
                   "error-compensating rounding against the calibration inputs; search: per-block scale search only)")
    p.add_argument("--backend", choices=["auto", "native", "optimum"],
                   help=f"graph builder (default {ed['backend']}: native where the architecture and precision "
                   "allow, else optimum-onnx)")
    p.add_argument("--target", choices=TARGETS,
                   help=f"what the package runs on (default {ed['target']}; gpu: every node on GPU providers such "
                   "as WebGPU or DirectML, lengths fed by the runtime; npu-qnn: static QDQ graph for the "
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
    p.add_argument("--kld", action="store_true",
                   help="the self-check also scores KL divergence from the source as llama-perplexity "
                   "--kl-divergence does (chunks of 256 of the license texts Debian ships), recorded in the manifest "
                   "and shown by `edgelm info`, beside llama.cpp's figures; slower (a second pass of the source)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
