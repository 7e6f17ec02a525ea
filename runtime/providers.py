"""Execution providers as data: one spec per provider, no `ep == "..."` branches elsewhere.

A spec says what onnxruntime calls the provider, which device kind it drives, which pip package brings
it, and the session and provider options it needs by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgelm.errors import ProviderUnavailable


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # edgelm's short name, used on the command line
    ort_name: str  # onnxruntime's name
    device: str  # cpu | gpu | npu
    install: str  # what to pip install to get it
    provider_options: dict[str, Any] = field(default_factory=dict)
    # SessionOptions attributes the provider needs, e.g. DirectML wants no memory pattern, sequential runs.
    session_options: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


PROVIDERS: dict[str, ProviderSpec] = {
    s.name: s
    for s in [
        ProviderSpec("cpu", "CPUExecutionProvider", "cpu", "onnxruntime"),
        ProviderSpec(
            "dml",
            "DmlExecutionProvider",
            "gpu",
            "onnxruntime-directml (Windows only)",
            provider_options={"device_id": 0},
            session_options={"enable_mem_pattern": False, "execution_mode": "sequential"},
            notes="no concurrent Run() on one session",
        ),
        ProviderSpec("cuda", "CUDAExecutionProvider", "gpu", "onnxruntime-gpu", provider_options={"device_id": 0}),
    ]
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    present = set(ort.get_available_providers())
    return [name for name, spec in PROVIDERS.items() if spec.ort_name in present]


def resolve(name: str) -> ProviderSpec:
    """The spec for `name`, or ProviderUnavailable naming the available ones and what to install."""
    spec = PROVIDERS.get(name)
    available = available_providers()
    if spec is None:
        raise ProviderUnavailable(
            f"unknown execution provider {name!r}; known: {', '.join(PROVIDERS)}; available here: {', '.join(available)}"
        )
    if name not in available:
        raise ProviderUnavailable(
            f"execution provider {name!r} ({spec.ort_name}) is not in this onnxruntime build; "
            f"available: {', '.join(available)}; install {spec.install}"
        )
    return spec
