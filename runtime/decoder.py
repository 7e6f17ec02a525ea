"""One ONNX decoder session plus its KV cache: feed token ids, get logits.

The manifest says the I/O names and the cache layout; nothing is guessed from the graph. The cache is a
list of numpy arrays per layer, (batch, kv_heads, seq, head_dim), replaced by the graph's `present`
outputs after each run.
"""

from __future__ import annotations

import numpy as np

from edgelm.errors import GenerationError
from edgelm.manifest import Manifest


class Decoder:
    def __init__(self, session, manifest: Manifest):
        self.session = session
        self.manifest = manifest
        io, kv = manifest.io, manifest.kv_cache
        self.context_length = manifest.context_length
        self._past_names = [name for layer in range(kv.num_layers) for name in io.past_names(layer)]
        self._outputs = [io.logits] + [name for layer in range(kv.num_layers) for name in io.present_names(layer)]
        self._empty = np.zeros((1, kv.num_kv_heads, 0, kv.head_dim), dtype=np.dtype(kv.dtype))
        self.reset()

    def reset(self) -> None:
        """Forget the cached sequence."""
        self.past = [self._empty] * len(self._past_names)
        self.length = 0

    def forward(self, ids, last_only: bool = True) -> np.ndarray:
        """Run `ids` (new tokens) after the cached ones; logits (vocab,) of the last position, or (n, vocab)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # (batch=1, n)
        n = ids.shape[1]
        total = self.length + n
        if total > self.context_length:
            raise GenerationError(
                f"sequence of {total} tokens exceeds the package's context length {self.context_length}; "
                "shorten the prompt or lower --max-new-tokens"
            )
        io = self.manifest.io
        feeds = {io.input_ids: ids, **dict(zip(self._past_names, self.past))}
        if io.attention_mask:
            feeds[io.attention_mask] = np.ones((1, total), dtype=np.int64)  # (batch, past + n)
        if io.position_ids:
            feeds[io.position_ids] = np.arange(self.length, total, dtype=np.int64).reshape(1, n)
        logits, *present = self.session.run(self._outputs, feeds)  # logits (1, n, vocab)
        self.past = present
        self.length = total
        return logits[0, -1] if last_only else logits[0]
