"""Which execution provider runs which node: the partition report.

Read from onnxruntime's own record (`session.record_ep_graph_assignment_info` +
`InferenceSession.get_provider_graph_assignment_info`). Where a build lacks that record the report says
so instead of guessing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from edgelm.errors import EdgeLMError


@dataclass(frozen=True)
class EpShare:
    ep: str
    nodes: int
    op_types: dict[str, int]


@dataclass(frozen=True)
class Partition:
    requested: str  # onnxruntime name of the provider the user asked for
    shares: tuple[EpShare, ...]
    fallback: tuple[tuple[str, str], ...] = ()  # (op_type, node name) not on the requested provider
    source: str = "onnxruntime assignment info"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(s.nodes for s in self.shares)

    def on_requested(self) -> int:
        return sum(s.nodes for s in self.shares if s.ep == self.requested)

    def summary(self) -> str:
        lines = [f"{self.on_requested()}/{self.total} nodes on {self.requested} ({self.source})"]
        for share in self.shares:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(share.op_types.items(), key=lambda kv: -kv[1]))
            lines.append(f"  {share.ep}: {share.nodes} nodes: {ops}")
        if self.fallback:
            names = ", ".join(f"{op} ({name})" for op, name in self.fallback[:12])
            more = f" and {len(self.fallback) - 12} more" if len(self.fallback) > 12 else ""
            lines.append(f"  fell back: {names}{more}")
        return "\n".join(lines)


class ProviderFallback(EdgeLMError):
    """Strict mode: nodes the requested provider does not take would run on the CPU."""

    def __init__(self, report: Partition):
        self.report = report
        ops = Counter(op for op, _ in report.fallback)
        # the ops the provider rejects first; Q/DQ nodes around them only follow them to the CPU
        nodes = sorted(report.fallback, key=lambda f: f[0] in ("QuantizeLinear", "DequantizeLinear"))
        names = ", ".join(f"{op} ({name})" for op, name in nodes[:8])
        more = f" and {len(report.fallback) - 8} more" if len(report.fallback) > 8 else ""
        super().__init__(
            f"strict mode: {len(report.fallback)} of {report.total} nodes would fall back from "
            f"{report.requested} to the CPU ({', '.join(f'{op} x{n}' for op, n in ops.most_common())}): "
            f"{names}{more}; use an export made for this provider (--target gpu for GPU providers, --target npu-qnn "
            "for QNN), or drop --strict"
        )


def merged(reports: list[Partition]) -> Partition:
    """One report over several graphs of a package (e.g. an NPU package's prefill and decode graphs)."""
    if len(reports) == 1:
        return reports[0]
    by_ep: dict[str, Counter] = {}
    for report in reports:
        for share in report.shares:
            by_ep.setdefault(share.ep, Counter()).update(share.op_types)
    shares = tuple(EpShare(ep, sum(c.values()), dict(c)) for ep, c in by_ep.items())
    return Partition(reports[0].requested, shares, tuple(f for r in reports for f in r.fallback),
                     reports[0].source, tuple(n for r in reports for n in r.notes))


def partition_of(session, requested: str) -> Partition:
    info = session.get_provider_graph_assignment_info() if hasattr(session, "get_provider_graph_assignment_info") else None
    if not info:
        providers = session.get_providers()
        return Partition(requested, (EpShare(providers[0], 0, {}),), source="unavailable in this onnxruntime",
                         notes=("this onnxruntime build does not record node assignment",))
    by_ep: dict[str, Counter] = {}
    fallback = []
    for subgraph in info:
        counts = by_ep.setdefault(subgraph.ep_name, Counter())
        for node in subgraph.get_nodes():
            counts[node.op_type] += 1
            if subgraph.ep_name != requested:
                fallback.append((node.op_type, node.name))
    shares = tuple(EpShare(ep, sum(c.values()), dict(c)) for ep, c in by_ep.items())
    return Partition(requested, shares, tuple(fallback))
