"""Helpers the subcommands share: flag groups, loading a package from flags, argument types."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from edgelm.errors import UsageError


def subcommand(sub, name: str, summary: str, examples: tuple[str, ...], description: str | None = None):
    """A subcommand's parser: `summary` in the command list, `examples` (shell lines, "# ..." comments allowed)
    shown under its --help."""
    import argparse

    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    p = sub.add_parser(name, help=summary, description=description or summary[:1].upper() + summary[1:] + ".",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show other libraries' warnings and native providers' console output")
    return p


def given(args, **names: str) -> dict:
    """Config kwargs for the flags the user gave (None means: keep the config's default)."""
    return {key: getattr(args, attr) for key, attr in names.items() if getattr(args, attr) is not None}


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def csv(values) -> str:
    return ",".join(str(v) for v in values)


def defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_provider_flags(p, ep_help: str) -> None:
    p.add_argument("--ep", help=ep_help)
    p.add_argument("--strict", action=argparse.BooleanOptionalAction, default=None,
                   help="fail, naming the nodes, if any node would fall back to the CPU (default: on for NPU "
                        "packages on their provider, off otherwise; --no-strict allows the fallback)")
    p.add_argument("--ep-option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="provider option, e.g. soc_model=60 (repeatable)")


def add_verify_flags(p) -> None:
    """--verify full / --no-verify: how much of a package's sha256 check to do (args.verify: load's `verify`)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--verify", choices=["full"], default=True,
                       help="full: rehash every file (default: rehash files changed since a verified load, known by "
                       "size, mtime, ctime and inode)")
    group.add_argument("--no-verify", dest="verify", action="store_false",
                       help="skip the sha256 check of the package's files (paths, listing and sizes are still checked)")


def add_load_flags(p, default_ep: str = "cpu") -> None:
    """Flags of the commands that load one package to generate (run, chat, serve)."""
    p.add_argument("package", help="an edgelm package folder (made by edgelm export)")
    add_provider_flags(p, f"execution provider: {default_ep} (default), auto, cpu, qnn, openvino, dml, ... "
                          "(see edgelm info)")
    p.set_defaults(default_ep=default_ep)
    add_verify_flags(p)
    p.add_argument("--context-cache", metavar="DIR",
                   help="keep the provider's compiled EP-context model here (QNN): compile once, load fast")
    p.add_argument("-t", "--threads", type=int, help="intra-op threads (default: physical cores)")


# sampling flags: (flag, type, help); each maps to Model.request's argument of the same name
SAMPLING_FLAGS = (
    ("--max-new-tokens", int, "default: the package's"),
    ("--temperature", float, "0 = greedy (default: the package's)"),
    ("--top-k", int, "keep the k most likely tokens (0 = off)"),
    ("--top-p", float, "nucleus sampling: keep the top tokens holding this probability mass (1 = off)"),
    ("--min-p", float, "keep tokens at least this fraction as likely as the most likely one (0 = off)"),
    ("--repetition-penalty", float, "CTRL-style penalty on tokens already seen (1 = off)"),
    ("--seed", int, "sampling seed"),
)


def add_sampling_flags(p) -> None:
    for flag, kind, text in SAMPLING_FLAGS:
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string: the answer ends before it "
                   "(repeatable)")
    p.add_argument("--speculate", metavar="SOURCE", help="speculative decoding: prompt-lookup (drafts from the "
                   "prompt and the text so far), or a smaller package folder sharing the tokenizer (a draft model); "
                   "the same answer greedily, the same distribution when sampling")


def sampling_kwargs(args) -> dict:
    """Model.request keyword arguments of the sampling flags given."""
    out = {f[0][2:].replace("-", "_"): getattr(args, f[0][2:].replace("-", "_")) for f in SAMPLING_FLAGS}
    return {k: v for k, v in {**out, "stop": args.stop, "speculate": speculate_option(args)}.items() if v is not None}


def speculate_option(args):
    """--speculate: a drafter's name as it is, a package folder loaded as the draft model (same provider)."""
    from edgelm.runtime.speculative import DRAFTERS

    source = getattr(args, "speculate", None)
    if source is None or source in DRAFTERS:
        return source
    from pathlib import Path

    from edgelm.runtime import load

    if not Path(source).is_dir():
        raise UsageError(f"--speculate {source}: give prompt-lookup or a draft package folder")
    return load(source, ep=args.ep or args.default_ep, threads=args.threads, verify=args.verify)


def load_model(args):
    from edgelm.runtime import load

    model = load(args.package, ep=args.ep or args.default_ep, threads=args.threads, strict=args.strict,
                 verify=args.verify, provider_options=dict(args.ep_option or ()),
                 context_cache=args.context_cache)
    say_provider(model)
    return model


def say_provider(model) -> None:
    if model.provider.reason:
        print(f"edgelm: {model.provider.reason}", file=sys.stderr)


def writable_file(name: str, flag: str) -> None:
    """UsageError unless a file can be written at `name` (tried now, before minutes of work; a file created by the
    try is removed again)."""
    import os
    from pathlib import Path

    path = Path(name)
    existed = path.exists()
    if path.is_dir() or not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: give a file path in an existing folder")
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror}); give a writable file path") from None
    if not existed:
        os.unlink(path)
