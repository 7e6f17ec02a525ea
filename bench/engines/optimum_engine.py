"""optimum's ORTModelForCausalLM running the package's own graph: same weights, optimum's runtime loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.bench.engines.base import Engine, EngineUnavailable, register
from edgelm.runtime.providers import resolve


@register("optimum")
class OptimumEngine(Engine):
    def __init__(self, target: str, ep: str, threads: int | None, **provider):
        super().__init__(target, ep, threads, **provider)
        try:
            import onnxruntime as ort
            import torch
            from optimum.onnxruntime import ORTModelForCausalLM
        except ImportError as exc:
            raise EngineUnavailable(f"optimum peer needs optimum-onnx and torch ({exc.name} missing)") from None
        from edgelm.manifest import Manifest

        manifest = Manifest.load(target)
        if manifest.source.get("backend") != "optimum":
            raise EngineUnavailable(f"{target} was made by the {manifest.source.get('backend')} builder; give the "
                                    "optimum peer an optimum-made package (--optimum-package DIR)")
        if not (Path(target) / "config.json").is_file():
            raise EngineUnavailable(f"{target} has no config.json (made by an older edgelm): re-export it")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.torch = torch
        self.model = ORTModelForCausalLM.from_pretrained(
            target, file_name=manifest.model_file, provider=resolve(ep).spec.ort_name, session_options=opts,
            use_cache=True, use_io_binding=False, local_files_only=True,
        )
        self.vocab = manifest.vocab_size
        self.reset()

    def vocab_size(self) -> int:
        return self.vocab

    def reset(self) -> None:
        self.past = None
        self.length = 0

    def _run(self, ids) -> int:
        ids = self.torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(1, -1)
        total = self.length + ids.shape[1]
        mask = self.torch.ones(1, total, dtype=self.torch.int64)
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=self.past, use_cache=True)
        self.past, self.length = out.past_key_values, total
        return int(out.logits[0, -1].argmax())
