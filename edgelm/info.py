"""`edgelm info`: what this installation can run, or what a package holds."""

from __future__ import annotations

import platform

from edgelm import __version__
from edgelm.manifest import Manifest
from edgelm.versions import package_versions

MIB = 1 << 20
OPTIONAL = ("tokenizers", "numpy", "torch", "transformers", "optimum-onnx")


def describe_environment() -> str:
    import onnxruntime as ort

    from edgelm.errors import ProviderUnavailable
    from edgelm.runtime.providers import probe, all_specs, device_kind

    lines = [
        f"edgelm {__version__}, onnxruntime {ort.__version__}, python {platform.python_version()}",
        f"onnxruntime built-in providers: {', '.join(ort.get_available_providers())}",
        "execution providers (--ep):",
    ]
    for name, spec in all_specs().items():
        try:
            found = probe(spec)
        except ProviderUnavailable as exc:
            lines.append(f"  {name:9s} {spec.device:4s} unavailable: {exc}")
            continue
        kind = device_kind(spec, found.devices) + (" (software adapter)" if found.software else "")
        where = ", ".join(f"{d.device.type.name} {d.device.vendor}" for d in found.devices) or "built in"
        version = package_versions(spec.install.split()[0]).get(spec.install.split()[0], "")
        lines.append(f"  {name:9s} {kind:4s} available: {where} {spec.install} {version}".rstrip())
    found = package_versions(*OPTIONAL)
    lines += [f"{pkg} {found[pkg]}" if pkg in found else f"{pkg}: not installed" for pkg in OPTIONAL]
    return "\n".join(lines)


def describe_partitions(path: str, home: str = "cpu") -> list[str]:
    """For each available provider: how much of the package's graph it would run. Failing to load on `home`
    (the CPU, or the provider an NPU package's context binary is for) means the package is broken."""
    import warnings

    from edgelm.errors import EdgeLMError
    from edgelm.runtime import load
    from edgelm.runtime.providers import available_providers

    lines = ["partition per available provider:"]
    for name in available_providers():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load(path, ep=name)
        except EdgeLMError as exc:
            if name == home:
                raise
            lines.append(f"  {name}: cannot load: {exc}")
            continue
        lines += ["  " + ln for ln in model.partition.summary().splitlines()]
    return lines


def _mix_summary(linears) -> str:
    """'int4/32 asym gptq x 120 (down_proj, ...); int8/64 sym search x 1 (embed_tokens)': the linears grouped by
    their precision, most first, with the roles in each group."""
    from collections import Counter

    def kind(x) -> str:
        return f"int{x.bits}/{x.block_size} {'sym' if x.symmetric else 'asym'} {x.rounding}"

    counts = Counter(kind(x) for x in linears)
    roles = {}
    for x in linears:
        roles.setdefault(kind(x), set()).add(x.name.rsplit("/", 1)[-1])
    return "; ".join(f"{k} x {n} ({', '.join(sorted(roles[k]))})" for k, n in counts.most_common())


def _static_line(s) -> str:
    if s.prefill_file == s.decode_file:
        line = (f": one graph of {s.chunk} tokens/run over {s.context} positions (a decode step is one real token, "
                "padded), static shapes")
    else:
        line = f": {s.prefill_file} ({s.chunk} tokens/run) + {s.decode_file} ({s.decode_tokens} token/run), static shapes"
    if not s.portable:
        line += f"; ships only the {s.context_provider} context binary (runs on --ep {s.context_provider} only)"
    if s.compiled_nodes:
        counts = {s.context_models.get(role, role): n for role, n in s.compiled_nodes.items()}
        nodes = ", ".join(f"{n} nodes" if len(counts) == 1 else f"{name} {n} nodes" for name, n in counts.items())
        line += f"; compiled at export on {s.context_provider} in strict mode ({nodes}, all on {s.context_provider})"
    return line


def quality_line(c) -> str:
    """One line of a manifest's self-check block (edgelm.manifest.QualityCheck)."""
    line = (f"{c.verdict}: top-1 {c.top1:.3f}, KL {c.kl:.3g}, greedy {c.greedy_agreed}/{c.greedy_total}, "
            f"max |logit diff| {c.max_abs_logit_diff:.3g}")
    if c.tolerance is not None:
        line += f" (tolerance {c.tolerance:.3g})"
    return line + f", {c.positions} positions on {c.provider}"


def _quality_lines(m: Manifest) -> list[str]:
    if m.quality is None:
        return ["self-check   none recorded (exported with --no-check or by an older edgelm)"]
    c = m.quality
    lines = [f"self-check   {quality_line(c)}", f"  against    {c.reference}", f"  text       {c.text}"]
    if c.llama_kld is not None:
        k = c.llama_kld
        lines.append(f"  KLD        {k.kld:.4g} ± {k.kld_err:.2g}, same top {100 * k.same_top:.1f}%, PPL {k.ppl:.3f} "
                     f"(source {k.ppl_ref:.3f}); {k.positions} positions, {k.chunks} chunks of {k.n_ctx}: {k.text}")
    if m.device_quality is not None:
        d = m.device_quality
        lines.append(f"  on {d.provider:7s} {quality_line(d)} ({d.text})")
    return lines


def describe_package(path: str, verify: bool | str = True) -> str:
    m = Manifest.load(path)
    m.verify(path, hashes=verify)
    q = m.quantization
    quant = q.mode + (f" ({q.method}, {q.bits} bits, per-linear precision below, accuracy level {q.accuracy_level})"
                      if q.method == "MatMulNBits" and q.mix else
                      f" ({q.method}, {q.bits} bits, block {q.block_size}, "
                      f"{'symmetric' if q.symmetric else 'asymmetric'}, accuracy level {q.accuracy_level})"
                      if q.method == "MatMulNBits" else f" ({q.method})" if q.method else "")
    kv = m.kv_cache
    lines = [
        f"package      {path} (format {m.format_version})",
        f"model        {m.architecture} ({m.model_type}) from {m.source.get('model', '?')}",
        f"quantization {quant}",
        *([f"  layers     {sum(p.bits == 8 for p in q.layers)} of {len(q.layers)} kept 8-bit where 4-bit measured too "
           f"costly: {[p.layer for p in q.layers if p.bits == 8]} (per-layer errors: edgelm.json)"] if q.layers else []),
        *([f"  mix        {q.mix}: {_mix_summary(q.linears)}"] if q.mix else []),
        *([f"  rounding   {q.calibration}"] if q.calibration else []),
        f"context      {m.context_length} tokens, vocab {m.vocab_size}",
        f"target       {m.target}" + (_static_line(m.static) if m.static else ""),
        f"kv cache     {kv.num_layers} layers x {kv.num_kv_heads} kv heads x {kv.head_dim} dims, {kv.dtype}",
        f"eos ids      {list(m.generation.eos_token_ids)}, add BOS: {m.generation.add_bos}",
        f"chat         {'template present' if m.chat_template else 'no template'}"
        + (f"; reasoning model: chain of thought between {m.reasoning.start} and {m.reasoning.end}"
           if m.reasoning else ""),
        f"made by      " + ", ".join(f"{k} {v}" for k, v in m.producer.items())
        + f"; {m.source.get('backend', '?')} builder",
        *([f"  because    the native builder declines: {m.source['backend_reason']}"]
          if m.source.get("backend_reason") else []),
        *_quality_lines(m),
        "files:",
    ]
    lines += [f"  {name:24s} {e.bytes / MIB:9.2f} MiB  sha256 {e.sha256[:16]}…" for name, e in m.files.items()]
    home = m.static.context_provider if m.static is not None and not m.static.portable else "cpu"
    return "\n".join(lines + describe_partitions(path, home))
