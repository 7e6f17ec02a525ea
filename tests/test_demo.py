"""`edgelm demo`'s package decision (the Makefile's main job) on a tiny model: int4 when it answers the check
prompt, else int8, else a typed error; a finished package is reused. The real SmolLM2 run is
test_smollm2.py's int4 answer test."""

from __future__ import annotations

import pytest

import edgelm.demo as demo
from edgelm.errors import ExportError
from edgelm.manifest import Manifest


@pytest.mark.parametrize("answers,chosen", [({"int4": True}, "int4"), ({"int4": False, "int8": True}, "int8"),
                                            ({"int4": False, "int8": False}, None)])
def test_demo_exports_int4_falls_back_to_int8_and_reuses(builds, tmp_path, monkeypatch, answers, chosen):
    monkeypatch.setattr(demo, "_ensure_hf", lambda workdir: builds.hf("tiny-llama"))
    asked = []

    def check(package):
        quant = Manifest.load(package).quantization.mode
        asked.append(quant)
        return answers[quant], f"answer of {quant}"

    monkeypatch.setattr(demo, "answers_check", check)
    if chosen is None:
        with pytest.raises(ExportError, match="neither int4 nor int8"):
            demo._ensure_package(tmp_path)
        assert not list(tmp_path.glob("smollm2-135m-*"))  # failed packages are not left behind
        return
    package = demo._ensure_package(tmp_path)
    assert package.name == f"smollm2-135m-{chosen}" and Manifest.load(package).quantization.mode == chosen
    assert asked == list(answers)[: list(answers).index(chosen) + 1]
    assert sorted(p.name for p in tmp_path.glob("smollm2-135m-*")) == [package.name]
    assert Manifest.load(package).quality is not None  # the demo's export ran the self-check
    asked.clear()
    assert demo._ensure_package(tmp_path) == package and asked == []  # reused, not rebuilt
