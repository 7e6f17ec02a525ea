"""The source model's own forward in transformers/PyTorch, in float32, holding one module's weights at a time.

The self-check compares every package with this. Memory stays near the export's own: the model is built
with its parameters on the meta device (buffers real), and every module that owns parameters (embedding,
each linear and norm of each layer, final norm, lm_head) reads them from the safetensors files just
before it runs and drops them just after (forward hooks). The math is transformers' own module code,
unchanged.

    ids ─> [embed: load, run, drop] ─> [q_proj: load, run, drop] ─> ... ─> [lm_head: load, run, drop] ─> logits
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.errors import ExportError, first_line
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
            # eager: transformers' reference attention, the one that applies every feature (sdpa skips Gemma-2's
            # attention soft-capping)
            self.model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
        self.prefix = self.model.base_model_prefix
        # every module that owns parameters loads them just before it runs and drops them after: the layers,
        # and also the embedding, norms and lm_head (at 1.5B each of the two vocab tables is 0.9 GB in fp32)
        names = {id(m): n for n, m in self.model.named_modules()}
        tied = {}
        if config.tie_word_embeddings:  # a tied lm_head is the input embedding (transformers ties them)
            out, inp = self.model.get_output_embeddings(), self.model.get_input_embeddings()
            if out is not None and inp is not None:
                tied[f"{names[id(out)]}.weight"] = f"{names[id(inp)]}.weight"
        self.tied = tied
        self.owners = [(m, f"{n}." if n else "") for n, m in self.model.named_modules()
                       if any(True for _ in m.parameters(recurse=False))]
        # the vocabulary tables are never held whole (at 256k x 2304 one is 2.4 GB in fp32): the input embedding
        # gets the rows of the ids it looks up, the lm_head runs slice by slice of its rows
        embed, head = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        vocab_tables = {id(embed): self._rows_loader(f"{names[id(embed)]}.weight")}
        if isinstance(head, torch.nn.Linear) and head.bias is None:
            vocab_tables[id(head)] = self._sliced(head, self.tied.get(f"{names[id(head)]}.weight",
                                                                      f"{names[id(head)]}.weight"))
        self.hooks = [h for m, prefix in self.owners
                      for h in (m.register_forward_pre_hook(vocab_tables.get(id(m)) or self._loader(prefix)),
                                m.register_forward_hook(_drop))]
        self.streamed = True
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

    def _loader(self, prefix: str):
        def load(module, _args):
            from accelerate.utils import set_module_tensor_to_device

            for name, _ in list(module.named_parameters(recurse=False)):
                full = self.tied.get(prefix + name, prefix + name)
                value = self.torch.from_numpy(self.reader.get(self._checkpoint_name(full)))
                set_module_tensor_to_device(module, name, "cpu", value=value)
        return load

    def _rows_loader(self, name: str):
        """An input embedding's pre-hook: its weight becomes the rows of the ids it is given (the ids renumbered
        to them): a lookup, and the module's own forward (Gemma's scaling included) runs as it is."""
        def load(module, args):
            ids = args[0]
            unique, local = self.torch.unique(ids, return_inverse=True)
            checkpoint = self._checkpoint_name(name)
            rows = np.concatenate([self.reader.get_rows(checkpoint, int(i), int(i) + 1) for i in unique.tolist()])
            # a parameter of the rows' own shape (accelerate's setter insists on the table's)
            module.weight = self.torch.nn.Parameter(self.torch.from_numpy(rows), requires_grad=False)
            if getattr(module, "padding_idx", None) is not None:  # a training-only setting, checked against the size
                module.padding_idx = None
            return (local.reshape(ids.shape), *args[1:])
        return load

    def _sliced(self, head, name: str, rows: int = 16384):
        """An lm_head (a Linear without bias) computed slice by slice of its rows, each read from the file for its
        slice alone; its own weight stays on the meta device."""
        torch = self.torch

        def forward(x):
            checkpoint = self._checkpoint_name(name)
            vocab = self.reader.shape(checkpoint)[0]
            out = torch.empty(*x.shape[:-1], vocab, dtype=x.dtype)
            for start in range(0, vocab, rows):
                w = torch.from_numpy(self.reader.get_rows(checkpoint, start, start + rows))
                out[..., start:start + len(w)] = x @ w.T
            return out

        head.forward = forward
        return lambda module, args: None  # nothing to load before it

    def _load_everything(self) -> None:
        """Fall back to holding every weight (the model's size in float32) instead of streaming them."""
        for handle in self.hooks:
            handle.remove()
        for module, prefix in self.owners:
            self._loader(prefix)(module, None)
        self.streamed = False

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
            try:
                out = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            except Exception as exc:  # a model that reads a module's weight outside that module's forward
                if not self.streamed:
                    raise ExportError(f"self-check: the source model's forward failed in transformers "
                                      f"({type(exc).__name__}: {first_line(exc, 200)}); pass --no-check") from None
                self._load_everything()
                return self.logits(sequences)
            out = out.float().numpy()
        # out: (batch, length, vocab)
        return [out[row, : len(seq)] for row, seq in enumerate(sequences)]


def _drop(module, _args, _output) -> None:
    from accelerate.utils import set_module_tensor_to_device

    for name, _ in list(module.named_parameters(recurse=False)):
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
