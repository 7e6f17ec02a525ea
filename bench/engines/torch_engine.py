"""PyTorch eager: the HF model folder through transformers, fp32, with its DynamicCache."""

from __future__ import annotations

import numpy as np

from edgelm.bench.engines.base import Engine, EngineUnavailable, register


@register("torch")
class TorchEngine(Engine):
    def __init__(self, target: str, ep: str, threads: int | None, **provider):
        super().__init__(target, ep, threads, **provider)
        if ep != "cpu":
            raise EngineUnavailable("the torch peer runs on the CPU only")
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise EngineUnavailable(f"torch peer needs torch and transformers ({exc.name} missing)") from None
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, local_files_only=True).eval()
        self.reset()

    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def reset(self) -> None:
        self.past = None

    def _run(self, ids) -> int:
        ids = self.torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(1, -1)
        with self.torch.inference_mode():
            out = self.model(input_ids=ids, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return int(out.logits[0, -1].argmax())
