"""`edgelm plan`: run a fleet plan (models x export variants x targets) on Dask, locally or on a cluster."""

from __future__ import annotations

from edgelm.cli.common import subcommand


def run(args) -> int:
    from edgelm.bench.report import render
    from edgelm.fleet import load_plan, run_plan

    plan = load_plan(args.plan)
    result = run_plan(plan, scheduler=args.scheduler, progress=not args.quiet,
                      announce=(lambda *_: None) if args.quiet else print)
    if result.rows:
        print(render(result.rows, args.format), end="")
    if args.plot and result.rows:
        from edgelm.bench.plots import speed_vs_quality

        print(f"plot: {speed_vs_quality(result.rows, args.plot)}")
    done = len(result.rows)
    print(f"{plan.name}: {done} rows done ({result.skipped} from earlier runs), {len(result.failed)} failed, "
          f"{result.exports} exports, {result.wall_s:.1f} s; rows in {plan.path(plan.results)}")
    for label, why in result.failed.items():
        print(f"  failed {label}: {why}")
    return 1 if result.failed else 0


EXAMPLES = (
    "edgelm plan fleet.toml                                   # a local Dask cluster on this machine",
    "edgelm plan fleet.toml --scheduler tcp://10.0.0.5:8786   # workers joined with `edgelm worker`",
    "edgelm plan fleet.toml --format csv --plot build/fleet.png",
)


def add(sub) -> None:
    p = subcommand(sub, "plan", "run a fleet plan: export, evaluate and benchmark a matrix on Dask", EXAMPLES,
                   description="Expand PLAN (TOML: [[source]], [[variant]], [[target]], [bench], [eval]) into "
                   "export -> eval -> bench tasks on Dask distributed. Rows already in the plan's results file "
                   "are skipped; a package shared by rows is exported once. See README's fleet section.")
    p.add_argument("plan", help="the plan file (TOML)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (tcp://HOST:8786); default: a "
                   "local cluster on this machine")
    p.add_argument("--format", choices=("md", "csv", "json", "jsonl"), default="md", help="table format (default md)")
    p.add_argument("--plot", metavar="PNG", help="also draw decode speed against perplexity, a colour per device")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or dashboard line")
    p.set_defaults(func=run)
