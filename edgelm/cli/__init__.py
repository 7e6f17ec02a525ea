"""`edgelm export | run | chat | serve | bench | eval | info | demo`: one module a subcommand (the table
SUBCOMMANDS), each importing its part lazily.

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
SUBCOMMANDS = ("export", "run", "chat", "serve", "bench", "eval", "info", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as edgelm's: one line, exit code 2 (subcommand parsers are of this class too)."""

    def error(self, message: str):
        print(f"edgelm: error: {self.prog.removeprefix('edgelm ')}: {message} (see --help)", file=sys.stderr)
        sys.exit(UsageError.exit_code)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgelm", description="Export small language models to quantized ONNX packages, run, "
                     "chat with, serve and benchmark them.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"edgelm.cli.{name}").add(sub)
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
