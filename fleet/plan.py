"""A fleet plan: what to export, how, and where to measure it, as a TOML file read into frozen dataclasses.

    name = "laptop-and-phone"
    [bench]    prompt = 128, tokens = 128, repetitions = 3, threads = 2
    [eval]     perplexity = true, window = 256
    [[source]]  name = "smollm2", model = "build/smollm2-hf"       (or synthetic = "tiny-qwen2", seed = 0)
    [[variant]] name = "int4", quant = "int4", accuracy_level = 4  (any key of VARIANT_FIELDS)
    [[target]]  name = "laptop-cpu", provider = "cpu", threads = 2  (needs = { phone = 1 }: a worker resource)

Rows are every source x variant x target (a target's `variants` list narrows it). Every key is checked: one the
plan does not know is an error naming the ones it does, never ignored.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgelm.errors import PlanError
from edgelm.runtime.session import MAX_THREADS

# variant key -> where it goes in edgelm.export.config.ExportConfig (a path of attribute names)
VARIANT_FIELDS: dict[str, tuple[str, ...]] = {
    "quant": ("quant",),
    "backend": ("backend",),
    "target": ("target",),
    "check": ("check",),
    "min_agreement": ("min_agreement",),
    "block_size": ("quant_config", "block_size"),
    "mlp_block_size": ("quant_config", "mlp_block_size"),
    "symmetric": ("quant_config", "symmetric"),
    "accuracy_level": ("quant_config", "accuracy_level"),
    "calibration": ("quant_config", "calibration"),
    "context": ("npu", "context"),
    "chunk": ("npu", "chunk"),
    "activations": ("npu", "activations"),
    "weights": ("npu", "weights"),
}


@dataclass(frozen=True)
class Source:
    name: str
    model: str | None = None  # an HF folder or a .gguf file (absolute, resolved against the plan's folder)
    synthetic: str | None = None  # a preset of edgelm.export.presets (random weights)
    seed: int = 0


@dataclass(frozen=True)
class Variant:
    name: str
    options: tuple[tuple[str, Any], ...] = ()  # (VARIANT_FIELDS key, value), sorted

    def export_config(self):
        """The ExportConfig this variant asks for (no progress bars: it runs on a worker)."""
        from edgelm.export.config import ExportConfig

        config = ExportConfig(progress=False)
        for key, value in self.options:
            config = _set(config, VARIANT_FIELDS[key], value)
        return config


@dataclass(frozen=True)
class Target:
    name: str
    provider: str = "cpu"
    needs: tuple[tuple[str, float], ...] = ()  # Dask worker resources a row needs, beyond a machine slot
    variants: tuple[str, ...] | None = None  # only these variants run here (None: all)
    threads: int | None = None  # the bench's intra-op threads here (None: [bench] threads)


@dataclass(frozen=True)
class BenchSettings:
    prompt: int = 128  # pp
    tokens: int = 128  # tg
    repetitions: int = 3
    threads: int | None = None  # None: onnxruntime's default on each device (one per physical core)
    warmup: int = 1


@dataclass(frozen=True)
class EvalSettings:
    perplexity: bool = True  # on the shipped corpus, through the row's provider
    window: int = 256


@dataclass(frozen=True)
class Row:
    """One cell of the matrix: a package (source x variant) measured on a target."""

    id: str
    source: Source
    variant: Variant
    target: Target

    @property
    def label(self) -> str:
        return f"{self.source.name}/{self.variant.name}@{self.target.name}"

    def resources(self) -> dict[str, float]:
        return dict(self.target.needs)


@dataclass(frozen=True)
class Plan:
    name: str
    sources: tuple[Source, ...]
    variants: tuple[Variant, ...]
    targets: tuple[Target, ...]
    bench: BenchSettings = BenchSettings()
    eval: EvalSettings = EvalSettings()
    store: str = "build/fleet/packages"  # package folder of the whole fleet (shared between machines, or not)
    results: str = "build/fleet/results.jsonl"
    transfer_mib: float = 64.0  # packages up to this size also travel through Dask to workers that lack the store
    export_memory_gib: float = 4.0  # memory an export needs on its worker (a resource the worker advertises)
    allowed_failures: int = 2  # times a task may lose its worker before its row fails
    folder: str = "."  # where the plan file lies: relative paths resolve against it

    def rows(self) -> list[Row]:
        """Every source x variant x target the plan asks for, in plan order."""
        out = []
        for source in self.sources:
            for variant in self.variants:
                for target in self.targets:
                    if target.variants is None or variant.name in target.variants:
                        out.append(Row(self.row_id(source, variant, target), source, variant, target))
        if not out:
            raise PlanError("the plan expands to no rows: every target's `variants` list excludes every variant")
        return out

    def row_id(self, source: Source, variant: Variant, target: Target) -> str:
        """Stable across runs of the same plan (resume keys on it)."""
        return _digest([asdict(source), asdict(variant), asdict(target), asdict(self.bench), asdict(self.eval)])

    def path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else Path(self.folder) / path


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _set(config, path: tuple[str, ...], value):
    """`config` with the attribute at `path` (nested frozen dataclasses) replaced by `value`."""
    head, *rest = path
    return replace(config, **{head: _set(getattr(config, head), tuple(rest), value) if rest else value})


# -- reading -----------------------------------------------------------------------------------------
_TOP = {"name", "source", "variant", "target", "bench", "eval", "store", "results", "transfer_mib",
        "export_memory_gib", "allowed_failures"}


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; every unknown key or bad value is a PlanError naming the known ones."""
    path = Path(path)
    if path.is_dir():
        raise PlanError(f"plan file {path} is a folder; give a .toml plan file (see examples/fleet.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"plan file {path} not found") from None
    except UnicodeDecodeError:
        raise PlanError(f"plan file {path} is not UTF-8 text (TOML is UTF-8); save it as UTF-8") from None
    except OSError as e:
        raise PlanError(f"plan file {path} cannot be read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"plan file {path} is not valid TOML: {e}") from None
    return parse_plan(data, folder=path.resolve().parent)


def parse_plan(data: dict, folder: str | Path = ".") -> Plan:
    _known(data, _TOP, "the plan")
    sources = tuple(_source(s, Path(folder)) for s in _tables(data, "source"))
    variants = tuple(_variant(v) for v in _tables(data, "variant"))
    targets = tuple(_target(t) for t in _tables(data, "target"))
    for kind, items in (("source", sources), ("variant", variants), ("target", targets)):
        names = [i.name for i in items]
        if len(set(names)) != len(names):
            raise PlanError(f"two [[{kind}]] tables share a name: {sorted(n for n in names if names.count(n) > 1)}")
    known_variants = {v.name for v in variants}
    for t in targets:
        if t.variants and (unknown := set(t.variants) - known_variants):
            raise PlanError(f"target {t.name!r} lists variants the plan does not define: {sorted(unknown)}")
    scalars = {k: data[k] for k in ("store", "results", "transfer_mib", "export_memory_gib", "allowed_failures")
               if k in data}
    plan = Plan(name=str(data.get("name", "plan")), sources=sources, variants=variants, targets=targets,
                bench=_settings(BenchSettings, data.get("bench", {}), "[bench]"),
                eval=_settings(EvalSettings, data.get("eval", {}), "[eval]"), folder=str(folder), **scalars)
    plan.rows()  # an empty matrix fails now
    _check_scalars(plan)
    return plan


def _tables(data: dict, kind: str) -> list[dict]:
    items = data.get(kind)
    if not items:
        raise PlanError(f"the plan needs at least one [[{kind}]] table")
    if not isinstance(items, list):
        raise PlanError(f"[[{kind}]] must be an array of tables (write [[{kind}]], not [{kind}])")
    return items


def _known(table: dict, allowed: set[str], where: str) -> None:
    if unknown := set(table) - allowed:
        raise PlanError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(allowed)}")


def _named(table: dict, kind: str) -> str:
    if not isinstance(table.get("name"), str) or not table["name"]:
        raise PlanError(f"every [[{kind}]] needs a name = \"...\"")
    return table["name"]


def _source(table: dict, folder: Path) -> Source:
    name = _named(table, "source")
    _known(table, {"name", "model", "synthetic", "seed"}, f"source {name!r}")
    if ("model" in table) == ("synthetic" in table):
        raise PlanError(f"source {name!r}: give exactly one of model = \"HF folder or .gguf\" or synthetic = \"PRESET\"")
    if "synthetic" in table:
        from edgelm.export.presets import PRESETS

        if table["synthetic"] not in PRESETS:
            raise PlanError(f"source {name!r}: unknown synthetic preset {table['synthetic']!r}; "
                            f"known: {', '.join(sorted(PRESETS))}")
        seed = table.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PlanError(f"source {name!r}: seed must be a whole number >= 0, not {seed!r}")
        return Source(name, synthetic=table["synthetic"], seed=seed)
    if not isinstance(table["model"], str) or not table["model"]:
        raise PlanError(f"source {name!r}: model must be a path (an HF folder or a .gguf file), not {table['model']!r}")
    model = Path(table["model"]).expanduser()
    return Source(name, model=str(model if model.is_absolute() else (folder / model).resolve()))


def _variant(table: dict) -> Variant:
    name = _named(table, "variant")
    _known(table, {"name", *VARIANT_FIELDS}, f"variant {name!r}")
    options = {k: v for k, v in table.items() if k != "name"}
    defaults = Variant(name).export_config()
    for key, value in options.items():
        want = _field_type(defaults, VARIANT_FIELDS[key])
        if not _fits(value, want):
            raise PlanError(f"variant {name!r}: {key} must be {want}, not {value!r}")
    variant = Variant(name, tuple(sorted(options.items())))
    from edgelm.errors import ExportError
    from edgelm.export.pipeline import check_config

    try:  # every value the export would refuse (quant "int3", block size 7, ...), refused now, not on a worker
        check_config(variant.export_config())
    except ExportError as exc:
        raise PlanError(f"variant {name!r}: {exc}") from None
    return variant


def _field_type(config, path: tuple[str, ...]) -> str:
    """The kind of value ExportConfig holds at `path`: its default's type (a number where the default is None)."""
    for attr in path:
        config = getattr(config, attr)
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        type(config), "a number")


def _fits(value, want: str) -> bool:
    if want == "true or false":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return {"a whole number": isinstance(value, int), "a string": isinstance(value, str)}.get(
        want, isinstance(value, (int, float)))


def _target(table: dict) -> Target:
    name = _named(table, "target")
    _known(table, {"name", "provider", "needs", "variants", "threads"}, f"target {name!r}")
    needs = table.get("needs", {})
    if not isinstance(needs, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in needs.values()):
        raise PlanError(f"target {name!r}: needs must be a table of positive numbers, e.g. needs = {{ qnn = 1 }}")
    variants = table.get("variants")
    threads = table.get("threads")
    if threads is not None and not _threads(threads):
        raise PlanError(f"target {name!r}: threads must be a positive whole number up to {MAX_THREADS}, not {threads!r}")
    return Target(name, str(table.get("provider", "cpu")), tuple(sorted((k, float(v)) for k, v in needs.items())),
                  tuple(variants) if variants is not None else None, threads)


# [bench] / [eval] keys -> (what the value must be, its check)
_SETTING_RULES = {
    "prompt": ("a whole number from 1", lambda v: _whole(v) and v >= 1),
    "tokens": ("a whole number from 1", lambda v: _whole(v) and v >= 1),
    "repetitions": ("a whole number from 1", lambda v: _whole(v) and v >= 1),
    "warmup": ("a whole number from 0", lambda v: _whole(v) and v >= 0),
    "threads": (f"a whole number from 1 to {MAX_THREADS}", lambda v: _threads(v)),
    "perplexity": ("true or false", lambda v: isinstance(v, bool)),
    "window": ("a whole number from 2", lambda v: _whole(v) and v >= 2),
}


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _threads(value) -> bool:
    """A thread count a session takes (the runtime's bound, edgelm.runtime.session.MAX_THREADS)."""
    return _whole(value) and 1 <= value <= MAX_THREADS


def _settings(cls, table: dict, where: str):
    if not isinstance(table, dict):
        raise PlanError(f"{where} must be a table ({where} then key = value lines)")
    fields = set(cls.__dataclass_fields__)
    _known(table, fields, where)
    for key, value in table.items():
        what, ok = _SETTING_RULES[key]
        if not ok(value):
            raise PlanError(f"{where} {key} must be {what}, not {value!r}")
    return cls(**table)


def _check_scalars(plan: Plan) -> None:
    """The plan's own numbers and paths, checked before any work: results and store must be creatable."""
    for key, low in (("transfer_mib", 0), ("export_memory_gib", 0), ("allowed_failures", 0)):
        value = getattr(plan, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise PlanError(f"{key} must be a number >= {low}, not {value!r}")
    for key in ("store", "results"):
        value = getattr(plan, key)
        if not isinstance(value, str) or not value:
            raise PlanError(f"{key} must be a path, not {value!r}")
        path = plan.path(value)
        _creatable(path if key == "store" else path.parent, key, value)
        if key == "results" and path.is_dir():
            raise PlanError(f"results = {value!r} is a folder; give a .jsonl file path")


def _creatable(folder: Path, key: str, value: str) -> None:
    """PlanError unless `folder` is a folder, or can be made one (its nearest existing ancestor is a folder that
    takes a new entry: tried with a temporary folder, removed at once)."""
    import os
    import tempfile

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PlanError(f"{key} = {value!r}: {existing} is a file, not a folder; give a path in a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".edgelm-plan-"))
    except OSError as exc:
        raise PlanError(f"{key} = {value!r}: nothing can be written in {existing} ({exc.strerror})") from None
