"""`edgelm demo`: SmolLM2-135M (shipped on PyPI): export, chat, benchmark."""

from __future__ import annotations


def run(args) -> int:
    from edgelm.demo import run_demo

    return run_demo(args.workdir, prompt=args.prompt)


def add(sub) -> None:
    p = sub.add_parser("demo", help="SmolLM2-135M (shipped on PyPI): export, chat, benchmark")
    p.add_argument("--workdir", default="build/demo", help="where the converted model and package go")
    p.add_argument("--prompt", default="What is the capital of France?")
    p.set_defaults(func=run)
