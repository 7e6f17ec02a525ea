"""`edgelm info`: providers, devices and versions; or a package's manifest and partition."""

from __future__ import annotations

from edgelm.cli.common import add_verify_flags, subcommand


def run(args) -> int:
    from edgelm.info import describe_environment, describe_package

    print(describe_package(args.package, verify=args.verify) if args.package else describe_environment())
    return 0


EXAMPLES = (
    "edgelm info          # versions and the execution providers available here",
    "edgelm info pkg      # quantization, self-check figures, KV layout, files, partition per provider",
)


def add(sub) -> None:
    p = subcommand(sub, "info", "providers, devices and versions; or a package's manifest and partition", EXAMPLES)
    p.add_argument("package", nargs="?", help="a package folder (without one: what this installation can run)")
    add_verify_flags(p)
    p.set_defaults(func=run)
