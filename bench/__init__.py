"""edgelm.bench: reproducible measurements of edgelm packages (load, TTFT, prefill, decode, memory)."""

from edgelm.bench.config import BenchConfig
from edgelm.bench.runner import run_bench
from edgelm.bench.schema import BenchRow

__all__ = ["BenchConfig", "BenchRow", "run_bench"]
