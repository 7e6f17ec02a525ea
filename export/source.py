"""Open and validate a Hugging Face model folder: config, architecture, tokenizer and generation metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelm.paths import path_problem
from edgelm.errors import ModelSourceError
from edgelm.export.arch import ArchSpec, get_arch
from edgelm.export.native.weights import SafetensorsReader

# Copied into the package beside the graph: the tokenizer, and the HF configs (small; they let peers such as
# optimum's ORTModelForCausalLM load the same graph for side-by-side benchmarks).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
CONFIG_FILES = ("config.json", "generation_config.json")


@dataclass(frozen=True)
class ModelSource:
    path: Path
    config: dict[str, Any]
    arch: ArchSpec

    @property
    def tokenizer_config(self) -> dict[str, Any]:
        return _read_json(self.path / "tokenizer_config.json", default={})

    @property
    def generation_config(self) -> dict[str, Any]:
        return _read_json(self.path / "generation_config.json", default={})

    def chat_template(self) -> str | None:
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        template = self.tokenizer_config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        return template


def open_source(path: str | Path) -> ModelSource:
    """Validate `path` as an HF causal-LM folder with a registered architecture."""
    path = Path(path)
    if problem := path_problem(path):
        raise ModelSourceError(f"model folder {path} {problem}; pass a Hugging Face model folder (or a .gguf file)")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(
            f"{path} has no config.json: it is not a Hugging Face model folder "
            "(save one with `model.save_pretrained(folder)`)"
        )
    config = _read_json(config_path)
    if not (path / "tokenizer.json").is_file():
        raise ModelSourceError(
            f"{path} has no tokenizer.json (a fast tokenizer); save one with `tokenizer.save_pretrained(folder)`"
        )
    if not isinstance(config, dict):
        raise ModelSourceError(f"{config_path} must hold a JSON object")
    arch = get_arch(config, foreign=True)
    problems = arch.shape_problems()
    if problems:
        raise ModelSourceError(f"{config_path}: {'; '.join(problems)}; fix the config")
    if any(path.glob("*.safetensors")):  # every file's header and byte ranges, before any backend reads one
        SafetensorsReader(path)
    return ModelSource(path, config, arch)


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            return default
        raise ModelSourceError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelSourceError(f"{path} is not valid JSON ({str(exc)[:120]})") from None
