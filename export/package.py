"""Write a package folder: the ONNX graph with external data, tokenizer files and the manifest."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgelm import __version__
from edgelm.export.source import CONFIG_FILES, TOKENIZER_FILES, ModelSource
from edgelm.manifest import (Generation, GraphIO, KVCache, Manifest, Quantization, Reasoning, StaticGraphs, WeightStats,
                             file_entries)
from edgelm.versions import package_versions

MODEL_FILE = "model.onnx"
PRODUCER_PACKAGES = ("onnx", "onnxruntime", "torch", "transformers", "optimum", "optimum-onnx")


def save_onnx(model, folder: Path, name: str = MODEL_FILE) -> None:
    """Save with all weights in one external-data file beside the graph (no 2 GB protobuf limit)."""
    import onnx

    onnx.save_model(
        model,
        str(folder / name),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{name}.data",
        size_threshold=1024,
    )


def weight_stats(model) -> WeightStats:
    """Total constant bytes, and the bytes one decode step reads (Gather-only tables contribute a row)."""
    from edgelm.weights import weight_stats as count

    return count(model.graph)


def copy_support_files(source: ModelSource, folder: Path) -> None:
    """Tokenizer files and HF configs, where the source has them."""
    for name in TOKENIZER_FILES + CONFIG_FILES:
        if (source.path / name).is_file():
            shutil.copy2(source.path / name, folder / name)


def write_manifest(
    folder: Path,
    source: ModelSource,
    io_names: GraphIO,
    quantization: Quantization,
    backend: str,
    label: str,
    weights: WeightStats | None = None,
    kv_mode: str = "concat",
    target: str = "cpu",
    static: StaticGraphs | None = None,
    kv_dtype: str = "float32",
    kv: KVCache | None = None,
    extra_source: dict[str, str] | None = None,
) -> Manifest:
    """`static`: an NPU package's graph pair; its decode graph is then the model file and its context the
    package's context length. `kv`: the cache layout read from the graph (optimum), else the spec's."""
    arch = source.arch
    tok_config = source.tokenizer_config
    manifest = Manifest(
        architecture=arch.name,
        model_type=arch.model_type,
        model_file=static.decode_file if static else MODEL_FILE,
        io=io_names,
        kv_cache=replace(kv or arch.kv_cache(kv_dtype), mode=kv_mode),
        quantization=quantization,
        context_length=static.context - static.decode_tokens + 1 if static else arch.context_length,
        vocab_size=arch.vocab_size,
        generation=generation_defaults(source),
        tokenizer_file="tokenizer.json",
        chat_template=source.chat_template(),
        bos_token=_token_text(tok_config.get("bos_token")),
        eos_token=_token_text(tok_config.get("eos_token")),
        reasoning=think_markers(source.chat_template()),
        features=tuple(f for f, on in (("attention_softcap", backend == "native" and "attention" in arch.softcaps),
                                       ("longrope", arch.rope_switch is not None)) if on),
        rope_switch=arch.rope_switch,
        weights=weights,
        target=target,
        static=static,
        files=file_entries(folder),
        producer=producer_versions(),
        source={"model": label, "backend": backend, **(extra_source or {})},
    )
    manifest.write(folder)
    return manifest


# The markers reasoning models put around their chain of thought (data: add a family's pair here)
THINK_MARKERS = (Reasoning("<think>", "</think>"),)


def think_markers(template: str | None) -> Reasoning | None:
    """The think markers a chat template uses (it writes both: the generation prompt opens the reasoning,
    or earlier turns' reasoning is cut at the end marker), else None: not a reasoning model."""
    return next((m for m in THINK_MARKERS if template and m.start in template and m.end in template), None)


def generation_defaults(source: ModelSource) -> Generation:
    """eos/bos ids, BOS behaviour and sampling defaults from generation_config.json and the tokenizer."""
    from tokenizers import Tokenizer

    gen = {**{k: v for k, v in source.config.items() if k.endswith("token_id")}, **source.generation_config}
    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    eos = _as_list(gen.get("eos_token_id"))
    eos_text = _token_text(source.tokenizer_config.get("eos_token"))
    eos_id = tokenizer.token_to_id(eos_text) if eos_text else None
    if eos_id is not None and eos_id not in eos:
        eos.append(eos_id)
    bos = gen.get("bos_token_id")
    with_special = tokenizer.encode("a", add_special_tokens=True).ids
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    add_bos = bos is not None and len(with_special) > len(plain) and with_special[0] == bos
    sampling = bool(gen.get("do_sample", False))
    return Generation(
        eos_token_ids=tuple(eos),
        bos_token_id=bos,
        pad_token_id=gen.get("pad_token_id"),
        add_bos=add_bos,
        temperature=float(gen.get("temperature", 1.0)) if sampling else 0.0,
        top_k=int(gen.get("top_k", 0) or 0) if sampling else 0,
        top_p=float(gen.get("top_p", 1.0) or 1.0) if sampling else 1.0,
        repetition_penalty=float(gen.get("repetition_penalty", 1.0) or 1.0),
    )


def producer_versions() -> dict[str, str]:
    return {"edgelm": __version__, **package_versions(*PRODUCER_PACKAGES)}


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
        return value.get("content")
    return value
