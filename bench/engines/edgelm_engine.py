"""edgelm itself: a package through edgelm.runtime's Decoder."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from edgelm.bench.engines.base import Engine, register
from edgelm.runtime import load


@register("edgelm")
class EdgeLMEngine(Engine):
    def __init__(self, target: str, ep: str, threads: int | None, **provider):
        super().__init__(target, ep, threads, **provider)
        self.model = load(target, ep=ep, threads=threads, strict=self.strict, provider_options=self.provider_options)
        self.decoder = self.model.decoder

    def info(self):
        m = self.model.manifest
        kv = m.kv_cache
        files = m.files
        return {
            "model": m.source.get("model", self.target),
            "quant": m.quantization.mode,
            "context_length": m.context_length,
            "package_bytes": sum(f.bytes for f in files.values()),
            # the hash this load measured (verify: the file hashed now, or unchanged since it was hashed)
            "package_sha256": files[m.model_file].sha256 if self.model.verified and m.model_file in files else "",
            # key + value, every layer, one token
            "kv_bytes_per_token": 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * np.dtype(kv.dtype).itemsize,
            "weight_bytes_per_token": m.weights.per_token if m.weights else None,
            "ep": self.model.provider.label + (" (auto)" if self.ep == "auto" else ""),
            "ep_node_share": self.model.partition.on_requested() / max(self.model.partition.total, 1),
            "export_check": asdict(m.quality) if m.quality else None,
        }

    def vocab_size(self) -> int:
        return min(self.model.manifest.vocab_size, self.model.tokenizer.vocab_size)

    def reset(self) -> None:
        self.decoder.reset()

    def _run(self, ids) -> int:
        return int(np.argmax(self.decoder.forward(ids)))
