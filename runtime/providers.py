"""Execution providers as data: one spec per provider, no `ep == "..."` branches elsewhere.

A spec says what onnxruntime calls the provider, the device kind it drives, which pip package brings it,
how a plugin library is registered, the session and provider options it needs by default, and what
packages it can run. Plugin EPs (QNN, OpenVINO, any installed `onnxruntime-ep-*` package) only work when
registered with `onnxruntime.register_execution_provider_library` and added with
`SessionOptions.add_provider_for_devices`; naming them in `providers=[...]` silently gives a CPU session.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
from dataclasses import dataclass, field
from typing import Any

from edgelm.errors import ProviderUnavailable, first_line

DEVICE_PRIORITY = {"npu": 0, "gpu": 1, "cpu": 2}  # what `--ep auto` prefers


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # edgelm's short name, used on the command line
    ort_name: str  # onnxruntime's name
    device: str  # cpu | gpu | npu; "" = as onnxruntime reports the plugin's device
    install: str  # what to pip install to get it
    plugin_module: str | None = None  # a plugin EP: the module with get_library_path()
    provider_options: dict[str, str] = field(default_factory=dict)
    session_options: dict[str, Any] = field(default_factory=dict)  # SessionOptions attributes
    session_config: dict[str, str] = field(default_factory=dict)  # add_session_config_entry
    # EP-context cache: session config entries that compile once and reuse the binary (issue 6 uses it)
    context_cache: dict[str, str] = field(default_factory=dict)
    # provider options under which a session that may fall back partitions as a strict one would: used to
    # name the nodes a strict load refused (QNN hands graph-input Q and graph-output DQ nodes to the CPU
    # unless fallback is off; counting those would blame them for any compile failure)
    strict_partition: dict[str, str] = field(default_factory=dict)
    accepts: tuple[str, ...] = ("fp32", "fp16", "int8", "int4", "int4-fp16")  # package quantization modes it runs
    simulated_on: tuple[str, ...] = ()  # machines where the device is a simulator: auto skips it there
    # "shared" KV caches bind one host buffer as both past and present: only a provider that runs on host
    # memory sees them as one (a GPU EP copies both to device buffers, so GQA appends after the whole
    # buffer). Elsewhere the runtime uses the "concat" mode with the same graph.
    in_place_kv: bool = False
    # most new tokens one run may take: longer prompts are run in pieces (each after the ones before). WebGPU
    # (onnxruntime-ep-webgpu 0.4.0 on Mesa 25's lavapipe) returns wrong logits for positions 8 and on of a run
    # of 32 or more new tokens (fewer, in pieces or not, match the CPU EP): not known to be right elsewhere
    max_run_tokens: int | None = None
    # manifest features this provider is known to compute wrongly: feature -> what was measured (refused)
    wrong_features: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    @property
    def is_plugin(self) -> bool:
        return self.plugin_module is not None


PROVIDERS: dict[str, ProviderSpec] = {
    s.name: s
    for s in [
        ProviderSpec("cpu", "CPUExecutionProvider", "cpu", "onnxruntime", accepts=("fp32", "fp16", "int8", "int4", "int4-fp16", "qdq"),
                     in_place_kv=True),
        ProviderSpec(
            "dml", "DmlExecutionProvider", "gpu", "onnxruntime-directml (Windows only)",
            provider_options={"device_id": "0"},
            session_options={"enable_mem_pattern": False, "execution_mode": "sequential"},
            notes="no concurrent Run() on one session; unverified on hardware",
        ),
        ProviderSpec("cuda", "CUDAExecutionProvider", "gpu", "onnxruntime-gpu", provider_options={"device_id": "0"}),
        ProviderSpec(
            "qnn", "QNNExecutionProvider", "npu", "onnxruntime-qnn", plugin_module="onnxruntime_qnn",
            # fp32 graphs on the HTP need enable_htp_fp16_precision=1 together with a soc_model (pass both
            # with --ep-option); QDQ graphs need neither. With a selection policy instead of explicit
            # devices, QNN needs the session entry ep.qnnexecutionprovider.backend_type=htp.
            provider_options={"backend_type": "htp", "htp_performance_mode": "burst"},
            context_cache={"ep.context_enable": "1", "ep.context_embed_mode": "0"},
            strict_partition={"offload_graph_io_quantization": "0"},
            accepts=("qdq",), simulated_on=("x86_64", "AMD64"),
            notes="HTP backend; on x86-64 the HTP is a simulator. Wants static shapes and QDQ graphs.",
        ),
        ProviderSpec(
            "webgpu", "WebGpuExecutionProvider", "gpu", "onnxruntime-ep-webgpu", plugin_module="onnxruntime_ep_webgpu",
            accepts=("fp32", "fp16", "int8", "int4", "int4-fp16"), max_run_tokens=16,
            wrong_features={"attention_softcap": "its GroupQueryAttention soft-capping gives logits 0.08 away from the "
                            "CPU EP's (and transformers') on a tiny Gemma-2 (onnxruntime-ep-webgpu 0.4.0, lavapipe)",
                            "longrope": "it takes at most 16 tokens a run, and a longrope sequence that passes its switch "
                            "length is re-run whole in one run (Phi-3.5/4-mini)"},
            notes="Dawn: D3D12 on Windows, Metal on macOS, Vulkan on Linux. With ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1 "
                  "it lists a software adapter (Mesa's lavapipe, Mesa 25+) on the CPU device: correct, slow.",
        ),
        ProviderSpec(
            "openvino", "OpenVINOExecutionProvider", "cpu", "onnxruntime-ep-openvino",
            plugin_module="onnxruntime_ep_openvino",
            # OpenVINO's CPU plugin defaults to bf16 where the CPU has it; f32 matches the CPU EP
            provider_options={"load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "f32"}})},
            accepts=("fp32", "fp16", "int8", "qdq"),
        ),
    ]
}


def all_specs() -> dict[str, ProviderSpec]:
    """The table above plus any other installed plugin package named onnxruntime-ep-*."""
    specs = dict(PROVIDERS)
    known = {s.plugin_module for s in specs.values()}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if not name.startswith("onnxruntime-ep-"):
            continue
        module = ((dist.read_text("top_level.txt") or "").split() or [name.replace("-", "_")])[0]
        if module in known:
            continue
        short = name.removeprefix("onnxruntime-ep-")
        specs[short] = ProviderSpec(short, _plugin_ep_name(module, short), "", name, plugin_module=module)
    return specs


def _plugin_ep_name(module: str, short: str) -> str:
    try:
        return importlib.import_module(module).get_ep_name()
    except Exception:  # a plugin that cannot say its name is reported unavailable on use
        return f"{short}ExecutionProvider"


_REGISTERED: set[str] = set()


def register_plugin(spec: ProviderSpec) -> list:
    """Register `spec`'s plugin library once per process; return its OrtEpDevices."""
    import onnxruntime as ort

    if spec.ort_name not in _REGISTERED:
        try:
            module = importlib.import_module(spec.plugin_module)
        except ImportError:
            raise ProviderUnavailable(f"{spec.name} needs the package {spec.install}: pip install {spec.install}") from None
        from edgelm.runtime.session import native_console_quiet

        import os

        ort.set_default_logger_severity(2 if os.environ.get("EDGELM_VERBOSE") else 4)  # plugins log at load
        try:
            library = module.get_library_path()
            with native_console_quiet():
                ort.register_execution_provider_library(spec.ort_name, library)
        except Exception as exc:
            first = first_line(exc) or type(exc).__name__
            raise ProviderUnavailable(
                f"{spec.name}: the plugin library from {spec.install} failed to load ({first}); "
                f"reinstall it (pip install --force-reinstall {spec.install}) or check that it matches "
                f"onnxruntime {ort.__version__}"
            ) from None
        _REGISTERED.add(spec.ort_name)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == spec.ort_name]
    if not devices:
        raise ProviderUnavailable(f"{spec.name}: the plugin is installed but offers no device on this machine")
    return devices


def device_kind(spec: ProviderSpec, devices: list) -> str:
    """npu / gpu / cpu: the spec's, or for a plugin the table does not know, what onnxruntime reports.

    (QNN's HTP simulator attaches to the CPU device on x86; it is still an NPU provider.)"""
    if spec.device or not devices:
        return spec.device or "cpu"
    return devices[0].device.type.name.lower()


def is_software(spec: ProviderSpec, devices: list) -> bool:
    """A GPU provider whose devices are the CPU: a software adapter (WebGPU on lavapipe), correct but slow."""
    return spec.device == "gpu" and bool(devices) and all(d.device.type.name == "CPU" for d in devices)


@dataclass(frozen=True)
class Resolved:
    spec: ProviderSpec
    devices: list  # OrtEpDevice for plugins, [] otherwise
    reason: str = ""  # why `auto` chose it

    @property
    def software(self) -> bool:
        return is_software(self.spec, self.devices)

    @property
    def label(self) -> str:
        """The provider's name as reports show it: "webgpu (software adapter)" where it is one."""
        return self.spec.name + (" (software adapter)" if self.software else "")


def probe(spec: ProviderSpec) -> Resolved:
    """`spec` ready to use, or ProviderUnavailable saying what is missing for it alone."""
    if spec.is_plugin:
        return Resolved(spec, register_plugin(spec))
    import onnxruntime as ort

    if spec.ort_name not in ort.get_available_providers():
        raise ProviderUnavailable(f"{spec.name} ({spec.ort_name}) is not in this onnxruntime build; install {spec.install}")
    return Resolved(spec, [])


def resolve(name: str) -> Resolved:
    """The provider `name`, ready to use, or ProviderUnavailable naming what is available and what to install."""
    specs = all_specs()
    spec = specs.get(name)
    if spec is None:
        raise ProviderUnavailable(
            f"unknown execution provider {name!r}; known: {', '.join(specs)}; "
            f"available here: {', '.join(available_providers())}"
        )
    try:
        return probe(spec)
    except ProviderUnavailable as exc:
        raise ProviderUnavailable(f"execution provider {exc}; available here: {', '.join(available_providers())}") from None


def available_providers() -> list[str]:
    """Short names of the providers that can run here now."""
    out = []
    for name, spec in all_specs().items():
        try:
            probe(spec)
        except ProviderUnavailable:
            continue
        out.append(name)
    return out


def choose_auto(quant_mode: str) -> Resolved:
    """Prefer NPU, then GPU, then CPU, among providers that run this package for real; say why."""
    candidates, skipped = [], []
    machine = platform.machine()
    for name, spec in all_specs().items():
        try:
            found = probe(spec)
        except ProviderUnavailable:
            skipped.append(f"{name}: not available here")
            continue
        spec = found.spec
        if quant_mode not in spec.accepts:
            skipped.append(f"{name}: runs {'/'.join(spec.accepts)} packages, this one is {quant_mode}")
        elif machine in spec.simulated_on:
            skipped.append(f"{name}: its device is a simulator on {machine}")
        elif found.software:
            skipped.append(f"{name}: only a software adapter here (no GPU)")
        else:
            candidates.append(found)
    if not candidates:
        raise ProviderUnavailable(f"no provider here runs {quant_mode} packages: {'; '.join(skipped)}")
    best = min(candidates, key=lambda r: DEVICE_PRIORITY[device_kind(r.spec, r.devices)])
    kind = device_kind(best.spec, best.devices)
    reason = f"auto chose {best.spec.name} ({kind}); " + ("; ".join(skipped) if skipped else "nothing better")
    return Resolved(best.spec, best.devices, reason)
