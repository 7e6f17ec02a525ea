"""The source model's own forward in transformers/PyTorch, in float32, holding one decoder layer at a time.

The self-check compares every package with this. Memory stays near the export's own: the model is built
with its parameters on the meta device (buffers real), the parameters outside the layer stack (embedding,
final norm, lm_head) are read once, and each layer's are read from the safetensors files just before it
runs and dropped just after (forward hooks). The math is transformers' own module code, unchanged.

    ids ─> embed ─> [layer 0: load, run, drop] ─> ... ─> [layer L-1] ─> norm ─> lm_head ─> logits
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.errors import ExportError
from edgelm.export.native.weights import SafetensorsReader


class StreamedReference:
    def __init__(self, path: Path):
        import torch
        import transformers
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.torch = torch
        self.reader = SafetensorsReader(path)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        _rope_for_installed_transformers(config, path, int(transformers.__version__.split(".")[0]))
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        self.prefix = self.model.base_model_prefix
        self.stack_name, stack = _layer_stack(self.model)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ()) if config.tie_word_embeddings else set()
        for name, _ in self.model.named_parameters():
            if name.startswith(f"{self.stack_name}.") or (name in tied and not self._has(name)):
                continue  # layers load in their hooks; a tied lm_head becomes the embedding below
            self._set(self.model, name, name)
        self.model.tie_weights()
        for i, layer in enumerate(stack):
            layer.register_forward_pre_hook(self._loader(f"{self.stack_name}.{i}."))
            layer.register_forward_hook(_drop)
        stored = sorted({entry[1] for entry in self.reader.entries.values()})
        self.description = (f"transformers {transformers.__version__}, float32 forward "
                            f"(weights stored as {'/'.join(stored)})")

    def _candidates(self, name: str) -> tuple[str, ...]:
        return name, name.removeprefix(f"{self.prefix}."), f"{self.prefix}.{name}"

    def _has(self, name: str) -> bool:
        return any(c in self.reader for c in self._candidates(name))

    def _checkpoint_name(self, name: str) -> str:
        """The checkpoint's name for parameter `name` (some checkpoints leave out the base model prefix)."""
        for candidate in self._candidates(name):
            if candidate in self.reader:
                return candidate
        raise ExportError(f"self-check: the source has no tensor for {name}; it cannot be compared with the "
                          "package (pass --no-check to export without the check)")

    def _set(self, module, param: str, full_name: str) -> None:
        from accelerate.utils import set_module_tensor_to_device

        value = self.torch.from_numpy(self.reader.get(self._checkpoint_name(full_name)))
        set_module_tensor_to_device(module, param, "cpu", value=value)

    def _loader(self, prefix: str):
        def load(module, _args):
            for name, _ in list(module.named_parameters()):
                self._set(module, name, prefix + name)
        return load

    def logits(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """(len, vocab) float32 logits for each sequence, in one batched forward (right-padded: a causal model's
        positions never see the padding after them)."""
        t = self.torch
        length = max(len(s) for s in sequences)
        ids = t.zeros((len(sequences), length), dtype=t.long)  # (batch, length)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = t.tensor(seq)
        mask = t.ones_like(ids)  # all ones: padding sits after every real position
        with t.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float().numpy()
        # out: (batch, length, vocab)
        return [out[row, : len(seq)] for row, seq in enumerate(sequences)]


def _layer_stack(model) -> tuple[str, object]:
    """The ModuleList holding the decoder layers: the one with the most parameters."""
    import torch

    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise ExportError("self-check: no layer stack found in the transformers model; pass --no-check")
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def _drop(module, _args, _output) -> None:
    from accelerate.utils import set_module_tensor_to_device

    for name, _ in list(module.named_parameters()):
        set_module_tensor_to_device(module, name, "meta")


def _rope_for_installed_transformers(config, path: Path, major: int) -> None:
    """A config saved by transformers >= 5 keeps rope settings under `rope_parameters`, which 4.x ignores
    (silently computing with theta 10000 and no scaling): give 4.x the same settings in its own layout."""
    import json

    from edgelm.export.arch.contract import normalize

    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if major >= 5 or "rope_parameters" not in raw:
        return
    normalized, declined = normalize(raw)
    if declined:
        raise ExportError(f"self-check: {declined[0]}; transformers {major}.x cannot run this config as its source "
                          "model (pass --no-check, or install transformers >= 5)")
    config.rope_theta = normalized.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    config.rope_scaling = normalized.get("rope_scaling")
