"""onnxruntime-genai: a model folder made by its model builder (genai_config.json), via its Generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgelm.bench.engines.base import Engine, EngineUnavailable, register
from edgelm.runtime.decoder import DEFAULT_CAPACITY


@register("genai")
class GenaiEngine(Engine):
    def __init__(self, target: str, ep: str, threads: int | None, **provider):
        super().__init__(target, ep, threads, **provider)
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise EngineUnavailable("genai peer needs onnxruntime-genai (pip install onnxruntime-genai)") from None
        if not (Path(target) / "genai_config.json").is_file():
            raise EngineUnavailable(f"{target} is not an onnxruntime-genai model folder (no genai_config.json)")
        config = og.Config(target)
        config.clear_providers()
        if ep != "cpu":
            config.append_provider(ep)
        if threads:  # the same intra-op thread count as the other engines
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.og = og
        self.model = og.Model(config)
        self.context = int(json.loads((Path(target) / "genai_config.json").read_text())["model"]["context_length"])
        self.generator = None

    def vocab_size(self) -> int:
        return int(json.loads((Path(self.target) / "genai_config.json").read_text())["model"]["vocab_size"])

    def info(self) -> dict:
        """Its decoder graph, whose constant bytes per decode step the coordinator counts (bench.weights), not
        this process: reading the graph here would add to the peak memory measured for genai."""
        decoder = json.loads((Path(self.target) / "genai_config.json").read_text())["model"]["decoder"]
        return {"weights_graph": str(Path(self.target) / decoder["filename"])}

    def reset(self) -> None:
        params = self.og.GeneratorParams(self.model)
        # its KV cache is preallocated to max_length, like edgelm's shared cache (DEFAULT_CAPACITY tokens)
        params.set_search_options(max_length=min(DEFAULT_CAPACITY, self.context), do_sample=False)
        self.generator = self.og.Generator(self.model, params)

    def prefill(self, ids: np.ndarray) -> int:
        self.generator.append_tokens(np.asarray(ids, dtype=np.int32).reshape(1, -1))  # runs the prompt
        self.generator.generate_next_token()  # picks the first token from the prompt's logits
        return int(self.generator.get_next_tokens()[0])

    def step(self, token: int) -> int:
        self.generator.generate_next_token()  # runs the last token through the model, picks the next
        return int(self.generator.get_next_tokens()[0])
