"""One ONNX decoder session plus its KV cache: feed token ids, get logits.

The manifest says the I/O names and the cache layout; nothing is guessed from the graph. Two cache modes,
chosen by `kv_cache.mode`:

- "concat": per layer numpy arrays (batch, kv_heads, seq, head_dim), replaced by the graph's `present`
  outputs after each run (what optimum-made graphs do).
- "shared": per layer one buffer of `capacity` positions, bound through IO binding as both the `past`
  input and the `present` output, so GroupQueryAttention writes new keys/values in place: no per-step
  copy of the cache. The attention mask has `capacity` columns too, ones up to the current length.
"""

from __future__ import annotations

import numpy as np

from edgelm.errors import GenerationError
from edgelm.manifest import Manifest
from edgelm.runtime.contract import past_names, present_names


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share (what a cache holding `a` keeps for a sequence `b`)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Decoder:
    """The "concat" mode."""

    def __init__(self, sessions: dict, manifest: Manifest, folder=None, capacity: int | None = None):
        self.session = sessions["model"]
        self.manifest = manifest
        kv = manifest.kv_cache
        self.context_length = manifest.context_length
        self.rope_switch = manifest.rope_switch
        self._past_names, self._present_names = past_names(manifest), present_names(manifest)
        self._empty = np.zeros((1, kv.num_kv_heads, 0, kv.head_dim), dtype=np.dtype(kv.dtype))
        self.tokens: list[int] = []  # the ids whose keys/values the cache holds
        self.reset()

    def reset(self) -> None:
        """Forget the cached sequence."""
        self.truncate(0)

    def truncate(self, n: int) -> None:
        """Keep the first `n` cached positions (the keys/values of a token depend only on those before it)."""
        n = self._keepable(n)
        self.past = ([np.ascontiguousarray(p[:, :, :n]) for p in self.past] if n else
                     [self._empty] * len(self._past_names))
        self.length = n
        del self.tokens[n:]

    # longrope (Manifest.rope_switch): transformers rotates every position with the factors of the sequence's
    # current length, short up to the switch and long past it (Phi3's generate re-runs the whole sequence when it
    # first passes the switch). The cache follows: a run that takes it past the switch re-runs all the tokens
    # it holds, and keys rotated long are no prefix for a sequence within the switch.
    def _keepable(self, n: int) -> int:
        """How many of the first `n` cached positions a shorter sequence can keep: n, or 0 for longrope keys
        rotated long that would be kept for a sequence within the switch."""
        s = self.rope_switch
        return 0 if n and s is not None and n <= s < self.length else n

    def _crosses_switch(self, n: int) -> bool:
        s = self.rope_switch
        return s is not None and 0 < self.length <= s < self.length + n

    def _check(self, n: int) -> int:
        total = self.length + n
        if total > self.context_length:
            raise GenerationError(
                f"sequence of {total} tokens exceeds the context length {self.context_length}"
                f"{self._limit_hint}; shorten the prompt or lower --max-new-tokens"
            )
        return total

    _limit_hint = ""

    def _extra_feeds(self, n: int, total: int, last_only: bool) -> dict:
        io = self.manifest.io
        feeds = {}
        if io.position_ids:
            feeds[io.position_ids] = np.arange(self.length, total, dtype=np.int64).reshape(1, n)
        if io.logits_to_keep:  # the graph computes lm_head only for the positions we read
            feeds[io.logits_to_keep] = np.array(1 if last_only else n, dtype=np.int64)
        if io.logits_start:  # GPU packages: the same, as the slice's start (no int64 arithmetic in the graph)
            feeds[io.logits_start] = np.array([-1 if last_only else -n], dtype=np.int64)
        if io.seqlens_k:  # GPU packages: what the CPU graph derives from the mask, computed here
            feeds[io.seqlens_k] = np.array([total - 1], dtype=np.int32)
            feeds[io.total_sequence_length] = np.array(self._mask_width(total), dtype=np.int32)
        return feeds

    def _mask_width(self, total: int) -> int:
        """Columns of the attention mask this mode feeds (GQA's total_sequence_length): the tokens so far."""
        return total

    max_run: int | None = None  # most new tokens one session run takes (the provider's limit), None: any

    def forward(self, ids, last_only: bool = True) -> np.ndarray:
        """Run `ids` (new tokens) after the cached ones; logits (vocab,) of the last position, or (n, vocab).
        More than `max_run` tokens go in runs of `max_run`, each after the ones before (same result)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # (batch=1, n)
        if self._crosses_switch(ids.shape[1]):  # longrope: this run rotates the whole sequence long
            n, held = ids.shape[1], np.asarray(self.tokens, dtype=np.int64).reshape(1, -1)
            self.truncate(0)
            logits = self.forward(np.concatenate([held, ids], axis=1), last_only)
            return logits if last_only else logits[-n:]
        step = self.max_run
        if step and ids.shape[1] > step:
            parts = [self._run(np.ascontiguousarray(ids[:, i:i + step]), last_only) for i in range(0, ids.shape[1], step)]
            return parts[-1] if last_only else np.concatenate(parts)
        return self._run(ids, last_only)

    def _run(self, ids: np.ndarray, last_only: bool) -> np.ndarray:
        """One session run of `ids` (1, n)."""
        n = ids.shape[1]
        total = self._check(n)
        io = self.manifest.io
        feeds = {io.input_ids: ids, **dict(zip(self._past_names, self.past)), **self._extra_feeds(n, total, last_only)}
        if io.attention_mask:
            feeds[io.attention_mask] = np.ones((1, total), dtype=np.int64)  # (batch, past + n)
        logits, *present = self.session.run([io.logits] + self._present_names, feeds)  # logits (1, n, vocab)
        self.past = present
        self.length = total
        self.tokens.extend(ids[0].tolist())
        return logits[0, -1] if last_only else logits[0]


DEFAULT_CAPACITY = 8192  # tokens a preallocated cache holds unless the caller asks for more (max_length)


class SharedBufferDecoder(Decoder):
    """The "shared" mode: preallocated KV buffers, IO binding, in-place cache updates."""

    def __init__(self, sessions: dict, manifest: Manifest, folder=None, capacity: int | None = None):
        kv = manifest.kv_cache
        self.capacity = min(capacity or DEFAULT_CAPACITY, manifest.context_length)
        shape = (1, kv.num_kv_heads, self.capacity, kv.head_dim)  # (batch, kv_heads, capacity, head_dim)
        self._buffers = [np.zeros(shape, dtype=np.dtype(kv.dtype)) for _ in range(2 * kv.num_layers)]
        self._mask = np.zeros((1, self.capacity), dtype=np.int64)  # ones up to the current length
        super().__init__(sessions, manifest)
        self.context_length = self.capacity
        session = self.session
        if self.capacity < manifest.context_length:
            self._limit_hint = f" (the preallocated cache; load with max_length up to {manifest.context_length})"
        self._binding = session.io_binding()
        self._binding.bind_output(manifest.io.logits, "cpu")  # bound first: get_outputs()[0]; ORT sizes it
        for past, present, buf in zip(self._past_names, self._present_names, self._buffers):
            self._binding.bind_cpu_input(past, buf)
            self._binding.bind_output(present, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        if manifest.io.attention_mask:
            self._binding.bind_cpu_input(manifest.io.attention_mask, self._mask)

    def _mask_width(self, total: int) -> int:
        return self.capacity  # the mask spans the preallocated buffer

    def truncate(self, n: int) -> None:
        n = self._keepable(n)
        self._mask[0, n:] = 0  # positions past n are invisible and written over by the next run
        self.length = n
        del self.tokens[n:]

    def _run(self, ids: np.ndarray, last_only: bool) -> np.ndarray:
        n = ids.shape[1]
        total = self._check(n)
        io, b = self.manifest.io, self._binding
        self._mask[0, self.length : total] = 1
        b.bind_cpu_input(io.input_ids, ids)
        for name, value in self._extra_feeds(n, total, last_only).items():
            b.bind_cpu_input(name, value)
        b.bind_output(io.logits, "cpu")  # rebound each run (same slot, 0): its shape follows n and last_only
        self.session.run_with_iobinding(b)
        logits = b.get_outputs()[0].numpy()  # (1, kept, vocab)
        self.length = total
        self.tokens.extend(ids[0].tolist())
        return logits[0, -1] if last_only else logits[0]


def _static(sessions, manifest, folder=None, capacity=None):
    from edgelm.runtime.static import StaticDecoder

    return StaticDecoder(sessions, manifest, folder, capacity)


DECODERS = {"concat": Decoder, "shared": SharedBufferDecoder, "static": _static}
