"""`edgelm info`: providers, devices and versions; or a package's manifest and partition."""

from __future__ import annotations


def run(args) -> int:
    from edgelm.info import describe_environment, describe_package

    print(describe_package(args.package) if args.package else describe_environment())
    return 0


def add(sub) -> None:
    p = sub.add_parser("info", help="providers, devices and versions; or a package's manifest and partition")
    p.add_argument("package", nargs="?")
    p.set_defaults(func=run)
