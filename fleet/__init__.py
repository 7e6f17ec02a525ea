"""The fleet: one plan of models x export variants x targets, run on Dask distributed.

    plan.toml ──> Plan ──> rows (source x variant x target) ──> task graph on a Dask cluster
                                export (one per package, content-addressed) ──> eval ──> bench (one per row)
    results: one JSONL of bench rows (each with the device it ran on) + a status file (what failed and why)

Nothing imports this wing but the CLI; it imports export, bench and runtime.
"""

from edgelm.fleet.plan import Plan, load_plan
from edgelm.fleet.runner import PlanResult, run_plan

__all__ = ["Plan", "PlanResult", "load_plan", "run_plan"]
