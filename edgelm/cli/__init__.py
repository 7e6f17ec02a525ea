"""The `edgelm` command: one module a subcommand (the table SUBCOMMANDS), each importing its part lazily.

Errors edgelm raises on purpose print as one line, `edgelm: error: ...`, with a non-zero exit code;
set EDGELM_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from edgelm.errors import EdgeLMError, UsageError

# subcommand modules of edgelm.cli, in the order --help lists them; each has add(subparsers) and run(args)
SUBCOMMANDS = ("export", "run", "chat", "serve", "bench", "eval", "plan", "worker", "info", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as edgelm's: one line, exit code 2 (subcommand parsers are of this class too)."""

    def error(self, message: str):
        print(f"edgelm: error: {self.prog.removeprefix('edgelm ')}: {message} (see --help)", file=sys.stderr)
        sys.exit(UsageError.exit_code)


TOUR = """a first session (no download: SmolLM2-135M-Instruct comes from PyPI):
  edgelm demo                                    # export it to int4, answer a question, benchmark it
  edgelm run build/demo/smollm2-135m-int4 --chat --prompt "Name three planets."
  edgelm chat build/demo/smollm2-135m-int4       # a conversation in the terminal
  edgelm serve build/demo/smollm2-135m-int4      # OpenAI API + chat page at http://127.0.0.1:8000
  edgelm export path/to/hf-model -o my-int4      # your own model

`edgelm COMMAND --help` shows each command's options and examples."""


def version_text() -> str:
    """edgelm's version and those of the runtime packages it runs on (onnxruntime, the provider plugins)."""
    import platform

    from edgelm import __version__
    from edgelm.versions import package_versions

    names = ("onnxruntime", "onnxruntime-qnn", "onnxruntime-ep-openvino", "onnxruntime-ep-webgpu",
             "onnxruntime-directml", "numpy", "tokenizers")
    found = package_versions(*names)
    parts = [f"{n} {found[n]}" for n in names if n in found]
    return f"edgelm {__version__} ({', '.join(parts)}; python {platform.python_version()})"


class _Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgelm", description="Put small language models on PCs and phones: export a Hugging "
                     "Face model to a quantized ONNX package, run it, chat with it, serve it to apps, benchmark it.",
                     epilog=TOUR, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print edgelm's version and its runtime packages' and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"edgelm.cli.{name}").add(sub)
    return parser


def _one_line_warning(message, category, filename, *_args, **_kwargs) -> None:
    """edgelm's warnings as one line; other libraries' (numpy's "divide by zero", transformers' notices) only
    with --verbose: they are about their internals, not about what the user asked."""
    if _ours(category, filename) or os.environ.get("EDGELM_VERBOSE"):
        print(f"edgelm: warning: {message}", file=sys.stderr)


def _ours(category, filename: str) -> bool:
    import edgelm

    parts = ("edgelm.export", "edgelm.runtime", "edgelm.bench", "edgelm.serve")
    folders = [os.path.dirname(edgelm.__file__)]
    for name in parts:
        module = sys.modules.get(name)
        folders += list(getattr(module, "__path__", []))
    where = os.path.realpath(filename or "")
    return category.__module__.startswith("edgelm") or any(
        where.startswith(os.path.realpath(f) + os.sep) for f in folders)


def _terminated(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ["EDGELM_VERBOSE"] = "1"  # read by the runtime (native libraries' output) and the warnings
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
