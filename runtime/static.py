"""The "static" KV-cache mode: fixed-shape graphs (NPU packages) driven with a cache the runtime holds.

A `prefill` graph takes `chunk` tokens, a `decode` graph `decode_tokens`; both attend over `context`
positions: the first `context - N` cache slots (fed as past) and the N new tokens. They return logits and
only the new positions' keys/values, which this class writes into its cache. edgelm's NPU packages have
one graph serving both roles (decode_tokens == chunk: a decode step is a run with one real token, padded);
packages with a separate one-token decode graph run the same way.

    prompt ─ chunks of `chunk` (last one padded) ─> prefill ─┐
                                                              ├─> cache[:, :, pos:pos+n] = present
    each new token ─────────────────────────────> decode ────┘

The graphs take embeddings: each run's token ids are looked up in the package's int8 table (one scale per
group of a row) here, on the CPU.

A chunk runs on the prefill graph while its past fits (pos + chunk <= context); what is left goes one
token at a time through the decode graph, up to context - decode_tokens + 1 tokens in all. Each graph
shape has its own cache buffer, shaped as its past input and fed as is; new keys/values go into each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.errors import GenerationError, PackageError
from edgelm.manifest import Manifest
from edgelm.runtime.contract import past_names, present_names


class StaticDecoder:
    def __init__(self, sessions: dict, manifest: Manifest, folder: Path, capacity: int | None = None):
        static, kv = manifest.static, manifest.kv_cache
        if static is None:
            raise PackageError("this package has no static graph pair; re-export it with --target npu-qnn")
        self.manifest, self.static = manifest, static
        self.prefill, self.decode = sessions["prefill"], sessions["decode"]
        self.decode_tokens = static.decode_tokens
        self.cancel_step = static.chunk  # a cancellable prefill feeds one graph run at a time
        self.context_length = static.context - static.decode_tokens + 1  # the last run needs context - N past slots
        # (2 x sets, context, rotary_dim): per rope set cos, signed sin (Gemma-3: one set per rope base)
        self.rotary = _array(folder, static.rotary_file, np.float32, 3)
        if len(self.rotary) % 2:
            raise PackageError(f"{static.rotary_file} holds {len(self.rotary)} tables, not cos/sin pairs; re-export "
                               "the package")
        self._rotary_names = static.rotary_inputs(len(self.rotary) // 2)
        # (vocab, hidden): int8 (float32 in the fp32 parity tests of the graphs)
        self.embed_rows = _array(folder, static.embedding_file, (np.int8, np.float32), 2, mmap=True)
        self.embed_scales = _array(folder, static.embedding_scales_file, np.float32, 2)  # (vocab, groups)
        (vocab, hidden), (rows, groups) = self.embed_rows.shape, self.embed_scales.shape
        if rows != vocab or groups < 1 or hidden % groups:
            raise PackageError(f"{static.embedding_file} {self.embed_rows.shape} and {static.embedding_scales_file} "
                               f"{self.embed_scales.shape} do not fit together; re-export the package")
        self.embed_group = hidden // groups
        # One cache per graph, each exactly its graph's past input (batch, kv_heads, context - N, head_dim),
        # so a run feeds the arrays as they are (no per-step copy); new rows are written into both.
        self.cache = {
            n: [np.zeros((1, kv.num_kv_heads, static.context - n, kv.head_dim), dtype=np.float32)
                for _ in range(2 * kv.num_layers)]
            for n in {static.chunk, static.decode_tokens}
        }
        self._past, self._present = past_names(manifest), present_names(manifest)
        self.runs = {"prefill": 0, "decode": 0}
        self.tokens: list[int] = []  # the ids whose keys/values the cache holds
        self.reset()

    def reset(self) -> None:
        self.truncate(0)

    def truncate(self, n: int) -> None:
        """Keep the first `n` cached positions (the mask hides the slots after them until they are written)."""
        self.length = n
        del self.tokens[n:]

    def forward(self, ids, last_only: bool = True) -> np.ndarray:
        """Run `ids` after the cached tokens; logits (vocab,) of the last one, or (n, vocab) for all."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        total = self.length + len(ids)
        if total > self.context_length:
            raise GenerationError(
                f"sequence of {total} tokens exceeds the NPU package's context of {self.context_length} "
                f"(fixed at export: --context); shorten the prompt or lower --max-new-tokens")
        rows = []
        start = 0
        for role, n, take in self.plan(self.length, len(ids)):
            logits = self._run(role, ids[start:start + take], n)
            rows.append(logits[:take])
            self.tokens.extend(ids[start:start + take].tolist())
            start += take
            self.length += take
        out = np.concatenate(rows) if len(rows) > 1 else rows[0]
        return out[-1] if last_only else out

    def plan(self, start: int, count: int) -> list[tuple[str, int, int]]:
        """The runs forward() makes for `count` tokens after `start` cached ones: (role, N, real tokens). A chunk
        runs while its past fits (start + chunk <= context), the rest one token a run."""
        runs, pos, left, chunk = [], start, count, self.static.chunk
        while left:
            if left > 1 and pos + chunk <= self.static.context:
                runs.append(("prefill", chunk, min(chunk, left)))
            else:
                runs.append(("decode", self.decode_tokens, 1))
            pos, left = pos + runs[-1][2], left - runs[-1][2]
        return runs

    def inputs(self, pos: int, ids: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """The feeds of one run of N = n rows at `pos` but the cache: embeddings of `ids` padded to n, cos/sin
        rows and the mask."""
        padded = np.zeros(n, dtype=np.int64)
        padded[:len(ids)] = ids
        return {self.static.embeds: self.embeddings(padded), **self._positions(pos, n)}

    def _run(self, role: str, ids: np.ndarray, n: int) -> np.ndarray:
        """One run of the `role` graph, taking `n` tokens (ids padded to n); writes the real tokens' K/V to the
        caches."""
        session = self.prefill if role == "prefill" else self.decode
        pos, real = self.length, len(ids)
        feeds = self.inputs(pos, ids, n)
        feeds.update(zip(self._past, self.cache[n]))  # (1, kv, ctx - n, hd) each
        logits, *present = session.run([self.manifest.io.logits] + self._present, feeds)
        for cache in self.cache.values():
            end = min(pos + real, cache[0].shape[2])  # the prefill graph's past stops at ctx - chunk
            if end > pos:
                for buf, new in zip(cache, present):
                    buf[:, :, pos:end] = new[:, :, : end - pos]
        self.runs[role] += 1
        return logits[0]  # (n, vocab)

    def embeddings(self, ids: np.ndarray) -> np.ndarray:
        """(1, len(ids), hidden) float32: the table's rows for `ids`, each group of values times its scale."""
        rows = self.embed_rows[ids].astype(np.float32).reshape(len(ids), -1, self.embed_group)
        return (rows * self.embed_scales[ids][..., None]).reshape(1, len(ids), -1)

    def _positions(self, pos: int, n: int) -> dict:
        """cos/sin rows for positions pos..pos+n-1 and the additive mask (1, 1, n, ctx)."""
        s, ctx = self.static, self.static.context
        rows = np.minimum(np.arange(pos, pos + n), ctx - 1)  # padded rows beyond the context reuse the last
        mask = np.full((1, 1, n, ctx), s.mask_value, dtype=np.float32)
        mask[..., : min(pos, ctx - n)] = 0.0  # cached tokens: past slots 0..pos-1
        new = np.tril(np.ones((n, n), dtype=bool))  # new token j sees new tokens 0..j
        mask[0, 0, :, ctx - n:][new] = 0.0
        feeds = {s.mask: mask}
        for j, (cos, sin) in enumerate(self._rotary_names):
            feeds[cos], feeds[sin] = self.rotary[2 * j, rows][None], self.rotary[2 * j + 1, rows][None]
        return feeds


def _array(folder, name: str, dtype, ndim: int, mmap: bool = False) -> np.ndarray:
    """A .npy file of the package with the dtype and rank the static graphs expect, else PackageError."""
    try:
        value = np.load(Path(folder) / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PackageError(f"cannot read {name} from {folder} ({exc}); re-export the package") from None
    allowed = dtype if isinstance(dtype, tuple) else (dtype,)
    if value.dtype not in allowed or value.ndim != ndim:
        raise PackageError(f"{name} holds {value.dtype} of rank {value.ndim}, not "
                           f"{' or '.join(str(np.dtype(d)) for d in allowed)} of rank {ndim}; re-export the package")
    return value
