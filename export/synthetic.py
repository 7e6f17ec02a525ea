"""Synthetic models: a published config with seeded random weights plus an offline tokenizer.

Anyone can benchmark a shape, or test the pipeline, without downloading the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgelm.data import CORPUS
from edgelm.errors import ExportError
from edgelm.export.presets import PRESETS, Preset

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ExportError(f"unknown synthetic preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained on the shipped corpus; deterministic, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(CORPUS)], trainer)
    return tokenizer


def write_tokenizer(folder: Path, vocab_size: int) -> dict[str, int]:
    """Write tokenizer.json + tokenizer_config.json; return the special-token ids."""
    tokenizer = build_tokenizer(vocab_size)
    tokenizer.save(str(folder / "tokenizer.json"))
    eot, _, im_end = SPECIAL_TOKENS
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": im_end,
        "pad_token": eot,
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "model_max_length": 1 << 20,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return {name: tokenizer.token_to_id(name) for name in SPECIAL_TOKENS}


def build_synthetic(name: str, folder: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Save preset `name` with random weights (seeded) and an offline tokenizer as an HF folder; `dtype`:
    the saved weights' type ("bfloat16" halves the folder, as published checkpoints are stored)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    preset = get_preset(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(folder, min(preset.tokenizer_vocab, preset.config["vocab_size"]))
    eot, _, im_end = (ids[t] for t in SPECIAL_TOKENS)
    fields = {k: v for k, v in preset.config.items() if k != "model_type"}
    fields.update(initializer_range=preset.init_range, bos_token_id=None, eos_token_id=[im_end, eot],
                  pad_token_id=eot, dtype=dtype)
    config = AutoConfig.for_model(preset.config["model_type"], **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    if dtype != "float32":
        model.to(getattr(torch, dtype))
    model.generation_config.eos_token_id = [im_end, eot]
    model.generation_config.pad_token_id = eot
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_random(config: dict, folder: str | Path, seed: int = 0, std: float = 0.25, tokenizer_vocab: int = 512) -> Path:
    """Save an HF model of `config` (a config.json dict with `model_type`) with every tensor random: weights
    N(0, std), biases N(0, 0.1), norm gains 1 + N(0, 0.1), so that no optional feature hides behind a zero
    bias or a unit gain. For parity tests of the config contract; `save_pretrained` layout of the installed
    transformers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(folder, min(tokenizer_vocab, config["vocab_size"]))
    eot, _, im_end = (ids[t] for t in SPECIAL_TOKENS)
    fields = {k: v for k, v in config.items() if k != "model_type"}
    fields.update(bos_token_id=None, eos_token_id=[im_end, eot], pad_token_id=eot, dtype="float32")
    hf_config = AutoConfig.for_model(config["model_type"], **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
            elif param.dim() == 1:  # norm gains
                param.normal_(0.0, 0.1).add_(1.0)
            else:
                param.normal_(0.0, std)
    model.generation_config.eos_token_id = [im_end, eot]
    model.generation_config.pad_token_id = eot
    model.save_pretrained(folder, safe_serialization=True)
    return folder
