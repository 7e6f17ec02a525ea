"""`edgelm demo`: SmolLM2-135M (shipped on PyPI): export, chat, benchmark."""

from __future__ import annotations

from edgelm.cli.common import subcommand


def run(args) -> int:
    from edgelm.demo import run_demo

    return run_demo(args.workdir, prompt=args.prompt)


EXAMPLES = (
    "edgelm demo",
    'edgelm demo --workdir /tmp/demo --prompt "Name three planets."',
)


def add(sub) -> None:
    p = subcommand(sub, "demo", "SmolLM2-135M (shipped on PyPI): export, chat, benchmark", EXAMPLES)
    p.add_argument("--workdir", default="build/demo", help="where the converted model and package go")
    p.add_argument("--prompt", default="What is the capital of France?", help="the chat question (default: %(default)s)")
    p.set_defaults(func=run)
