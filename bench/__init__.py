"""edgelm.bench: reproducible measurements of edgelm packages and their peers.

load, TTFT, prefill and decode speed, memory, and the accuracy cost of each quantization, as one row
schema printed as md / csv / json / jsonl, plotted, and compared between runs.
"""

from edgelm.bench.config import BenchConfig
from edgelm.bench.runner import BenchResult, run_bench
from edgelm.bench.schema import BenchRow

__all__ = ["BenchConfig", "BenchResult", "BenchRow", "run_bench"]
