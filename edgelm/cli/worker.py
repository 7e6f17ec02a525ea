"""`edgelm worker`: join a fleet's Dask scheduler, offering this device's providers, memory and labels."""

from __future__ import annotations

from edgelm.cli.common import subcommand


def run(args) -> int:
    from edgelm.fleet.cluster import parse_resources, run_worker

    run_worker(args.scheduler, name=args.name, threads=args.threads, extra=parse_resources(args.resource or []))
    return 0


EXAMPLES = (
    "dask scheduler                                            # on the machine that runs `edgelm plan`",
    "edgelm worker --scheduler tcp://10.0.0.5:8786 --name snapdragon-laptop --resource phone=1",
)


def add(sub) -> None:
    p = subcommand(sub, "worker", "join a fleet's Dask scheduler with this device's providers and memory", EXAMPLES,
                   description="Start a Dask worker (under a nanny that restarts it) advertising machine=1, "
                   "memory=GiB, one resource per execution provider available here, and any --resource.")
    p.add_argument("--scheduler", required=True, metavar="ADDRESS", help="the scheduler (tcp://HOST:8786)")
    p.add_argument("--name", help="the device label rows record (default: the host name)")
    p.add_argument("--threads", type=int, default=2, help="task threads (exports/evals side by side; default 2)")
    p.add_argument("--resource", action="append", metavar="NAME=N", help="an extra resource (a device class)")
    p.set_defaults(func=run)
