"""The fleet's plan file and package store, without a cluster: every key checked, keys content-addressed,
packages verified when they arrive."""

from __future__ import annotations

import pytest

from edgelm.errors import PackageError, PlanError
from edgelm.fleet.plan import load_plan, parse_plan
from edgelm.fleet.store import describe, materialize, package_key, source_fingerprint

PLAN = {
    "name": "t",
    "source": [{"name": "a", "synthetic": "tiny-llama"}, {"name": "b", "synthetic": "tiny-qwen2", "seed": 1}],
    "variant": [{"name": "int4", "quant": "int4", "accuracy_level": 1}, {"name": "fp32", "quant": "fp32"}],
    "target": [{"name": "laptop", "threads": 2}, {"name": "phone", "needs": {"phone": 1}, "variants": ["int4"]}],
    "bench": {"prompt": 16, "tokens": 8},
}


def test_rows_are_the_matrix_narrowed_by_each_targets_variants():
    plan = parse_plan(PLAN)
    labels = [r.label for r in plan.rows()]
    assert labels == ["a/int4@laptop", "a/int4@phone", "a/fp32@laptop", "b/int4@laptop", "b/int4@phone",
                      "b/fp32@laptop"]
    assert len({r.id for r in plan.rows()}) == 6 and [r.id for r in parse_plan(PLAN).rows()] == [r.id for r in plan.rows()]
    phone = plan.rows()[1]
    assert phone.resources() == {"phone": 1.0} and phone.target.provider == "cpu"


def test_variant_keys_reach_the_export_config():
    """Each variant key lands where ExportConfig reads it (a key silently ignored would export something else)."""
    config = parse_plan(PLAN).variants[0].export_config()
    assert config.quant == "int4" and config.quant_config.accuracy_level == 1 and config.progress is False
    npu = parse_plan({**PLAN, "variant": [{"name": "n", "target": "npu-qnn", "context": 64, "chunk": 16,
                                          "weights": "int4"}], "target": [{"name": "npu"}]}).variants[0].export_config()
    assert (npu.target, npu.npu.context, npu.npu.chunk, npu.npu.weights) == ("npu-qnn", 64, 16, "int4")


@pytest.mark.parametrize("change, message", [
    ({"variant": [{"name": "v", "quant": "int4", "acuracy_level": 1}]}, r"unknown key\(s\) \['acuracy_level'\]"),
    ({"bench": {"promt": 16}}, r"\[bench\]: unknown key"),
    ({"colour": "red"}, "the plan: unknown key"),
    ({"source": [{"name": "a", "synthetic": "tiny-llama", "model": "x"}]}, "exactly one of model"),
    ({"source": [{"name": "a", "synthetic": "no-such"}]}, "unknown synthetic preset 'no-such'"),
    ({"target": [{"name": "t", "variants": ["int3"]}]}, r"variants the plan does not define: \['int3'\]"),
    ({"target": [{"name": "t", "needs": {"qnn": 0}}]}, "positive numbers"),
    ({"variant": [{"name": "v"}, {"name": "v"}]}, "share a name"),
    ({"target": []}, r"at least one \[\[target\]\]"),
    ({"variant": [{"name": "v", "quant": ["int4"]}]}, "quant must be a string"),
    ({"variant": [{"name": "v", "accuracy_level": "4"}]}, "accuracy_level must be a whole number"),
    ({"variant": [{"name": "v", "symmetric": 1}]}, "symmetric must be true or false"),
    ({"target": [{"name": "t", "threads": 0}]}, "positive whole number"),
])
def test_a_plan_it_cannot_run_as_written_is_refused_by_name(change, message):
    with pytest.raises(PlanError, match=message):
        parse_plan({**PLAN, **change})


def test_plan_files_resolve_paths_against_their_folder(tmp_path):
    (tmp_path / "p.toml").write_text('[[source]]\nname = "s"\nmodel = "models/hf"\n[[variant]]\nname = "v"\n'
                                     '[[target]]\nname = "t"\n')
    plan = load_plan(tmp_path / "p.toml")
    assert plan.sources[0].model == str(tmp_path / "models" / "hf")
    assert plan.path(plan.results) == tmp_path / "build/fleet/results.jsonl"
    (tmp_path / "bad.toml").write_text("[[source]\n")
    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(tmp_path / "bad.toml")


def test_package_keys_follow_the_source_content_and_the_export_options(tmp_path):
    plan = parse_plan(PLAN)
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text("{}")
    folder = parse_plan({**PLAN, "source": [{"name": "f", "model": str(src)}]}).sources[0]
    cache = tmp_path / "hashes.json"
    k1 = package_key(source_fingerprint(folder, cache), plan.variants[0])
    assert k1 == package_key(source_fingerprint(folder, cache), plan.variants[0])  # stable, from the cache too
    assert k1 != package_key(source_fingerprint(folder, cache), plan.variants[1])  # another variant
    (src / "config.json").write_text('{"x": 1}')  # same name, new content
    assert k1 != package_key(source_fingerprint(folder, cache), plan.variants[0])
    a, b = (package_key(source_fingerprint(s), plan.variants[0]) for s in plan.sources)
    assert a != b


def test_a_package_that_travels_is_verified_on_arrival(builds, tmp_path):
    """The small-package path: files carried in the reference, written to the worker's cache and checked against
    the manifest's sha256; one flipped byte is refused and leaves nothing in the cache."""
    package = builds.package("tiny-llama", "int4")
    ref = describe("k1", package, transfer_mib=64, reused=False)
    assert ref.blob is not None
    moved = ref.__class__(**{**ref.__dict__, "folder": str(tmp_path / "elsewhere")})  # not on this "machine"
    assert materialize(moved, tmp_path / "cache") == tmp_path / "cache" / "k1"
    bad = [(n, d[:100] + bytes([d[100] ^ 1]) + d[101:]) if n.endswith(".data") else (n, d) for n, d in ref.blob]
    corrupt = ref.__class__(**{**moved.__dict__, "key": "k2", "blob": tuple(bad)})
    with pytest.raises(PackageError, match="sha256"):
        materialize(corrupt, tmp_path / "cache")
    assert not (tmp_path / "cache" / "k2").exists() and not list((tmp_path / "cache").glob(".k2*"))
    big = describe("k3", package, transfer_mib=0.001, reused=False)
    assert big.blob is None
    with pytest.raises(PackageError, match="give every worker the plan's store folder"):
        materialize(big.__class__(**{**big.__dict__, "folder": str(tmp_path / "nowhere")}), tmp_path / "cache")


def test_the_cli_refuses_a_bad_plan_in_one_line(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "p.toml").write_text('[[source]]\nname = "s"\nsynthetic = "tiny-llama"\n[[variant]]\nname = "v"\n'
                                     'quant = "int4"\nbits = 3\n[[target]]\nname = "t"\n')
    proc = run_cli("plan", tmp_path / "p.toml")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "edgelm: error: variant 'v': unknown key(s) ['bits']" in proc.stderr


def test_resume_reruns_a_row_whose_package_changed(tmp_path):
    """A finished row counts as done only for the package key it measured: after its source changed (a new key)
    the row is not skipped; rows of other plans never count."""
    import json
    from dataclasses import replace

    from edgelm.bench.report import read_rows
    from edgelm.fleet.runner import done_rows
    from tests.conftest import ROOT

    row = read_rows(ROOT / "docs" / "bench-roofline-qwen2.5-0.5b.json")[0]
    results = tmp_path / "results.jsonl"
    rows = [replace(row, provenance={**row.provenance, "fleet": {"row": rid, "package_key": "k-old"}})
            for rid in ("r1", "r2")]
    results.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows) + '{"cut short')
    assert [r.provenance["fleet"]["row"] for r in done_rows(results, {"r1": "k-old", "r2": "k-old"})] == ["r1", "r2"]
    assert [r.provenance["fleet"]["row"] for r in done_rows(results, {"r1": "k-new", "r2": "k-old"})] == ["r2"]
    assert done_rows(results, {"r3": "k-old"}) == []
