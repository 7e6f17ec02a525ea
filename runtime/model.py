"""The runtime's public object: a loaded package that generates, streams and chats."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgelm.errors import GenerationError, PackageError
from edgelm.manifest import Manifest
from edgelm.runtime.chat import Message, render_chat
from edgelm.runtime.decoder import DECODERS
from edgelm.runtime.generate import generate_ids
from edgelm.runtime.partition import merged, partition_of
from edgelm.runtime.providers import choose_auto, resolve
from edgelm.runtime.sampling import SamplingConfig
from edgelm.runtime.session import create_session
from edgelm.runtime.tokenizer import StreamDecoder, TextTokenizer


class ProviderFallbackWarning(UserWarning):
    """Part of the graph runs on the CPU instead of the provider that was asked for."""


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: list[int]
    prompt_tokens: int


class Model:
    """A package loaded on one execution provider."""

    def __init__(
        self,
        package: str | Path,
        ep: str = "cpu",
        threads: int | None = None,
        verify: bool | str = True,
        strict: bool | None = None,
        provider_options: dict[str, str] | None = None,
        context_cache: str | Path | None = None,
        max_length: int | None = None,
    ):
        self.path = Path(package)
        self.manifest = Manifest.load(self.path)
        self.manifest.verify(self.path, hashes=verify)
        self.verified = bool(verify)  # hashes checked at this load (bench records them as measured)
        self._lock = threading.Lock()  # one generation at a time: they share the decoder's KV cache
        self._owner: int | None = None  # the thread whose generation holds the lock
        self.provider = choose_auto(self.manifest.quantization.mode) if ep == "auto" else resolve(ep)
        if strict is None:  # NPU packages are made to run whole on their provider: a fallback is an error
            strict = self.manifest.target != "cpu" and self.provider.spec.name != "cpu"
        opened: dict[str, object] = {}  # one session per graph file (an NPU package's one graph serves both roles)
        self.sessions = {}
        for role, name in self.manifest.graph_files().items():
            if name not in opened:
                opened[name] = self._session(role, name, threads, strict, provider_options, context_cache)
            self.sessions[role] = opened[name]
        self.session = next(iter(self.sessions.values()))
        self.partition = merged([partition_of(s, self.provider.spec.ort_name) for s in opened.values()])
        if self.partition.fallback:  # never silent: the caller asked for this provider
            p = self.partition
            warnings.warn(ProviderFallbackWarning(
                f"{len(p.fallback)} of {p.total} nodes fall back from {p.requested} to the CPU "
                f"(--strict / strict=True makes this an error):\n{p.summary()}"), stacklevel=2)
        gen = self.manifest.generation
        self.tokenizer = TextTokenizer(self.path / self.manifest.tokenizer_file, gen.bos_token_id, gen.add_bos)
        mode = self.manifest.kv_cache.mode
        if mode not in DECODERS:
            raise PackageError(f"KV-cache mode {mode!r} is unknown to this edgelm; upgrade edgelm")
        # max_length bounds the preallocated cache of "shared" packages (default: DEFAULT_CAPACITY tokens)
        self.decoder = DECODERS[mode](self.sessions, self.manifest, self.path, max_length)

    def _session(self, role: str, name: str, threads, strict: bool, provider_options, context_cache):
        """The session for one graph; a context model compiled at export for this provider is used if present."""
        static, spec = self.manifest.static, self.provider.spec
        compiled = static.context_models.get(role) if static and static.context_provider == spec.name else None
        if compiled and (self.path / compiled).is_file():
            try:
                return create_session(self.path / compiled, self.provider, threads, strict, provider_options)
            except PackageError as exc:  # e.g. compiled for another SoC or QNN version: compile the graph
                if not static.portable:
                    raise PackageError(f"{compiled} does not load here ({exc}), and this package ships only its "
                                       f"{static.context_provider} context binary; re-export it here (edgelm export "
                                       "--target npu-qnn), or with --keep-qdq for a package that can recompile") from None
                warnings.warn(f"{compiled} does not load here ({exc}); compiling {name} instead", stacklevel=3)
        if static is not None and not static.portable:
            raise PackageError(f"this NPU package ships only its {static.context_provider} context binary (no QDQ "
                               f"graphs), so it runs on --ep {static.context_provider} only, not {spec.name}; "
                               "re-export with --keep-qdq for a package that also runs on other providers")
        if context_cache is not None:  # one cache per graph: a re-exported package never meets a stale one
            entry = self.manifest.files.get(name)
            context_cache = Path(context_cache) / (entry.sha256[:16] if entry else "unhashed")
        return create_session(self.path / name, self.provider, threads, strict, provider_options, context_cache)

    # -- configuration -------------------------------------------------------------------------
    def sampling(self, **overrides) -> SamplingConfig:
        """The package's sampling defaults with `overrides` (None values are ignored)."""
        gen = self.manifest.generation
        base = SamplingConfig(gen.temperature, gen.top_k, gen.top_p, gen.repetition_penalty)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def chat_prompt(self, messages: list[Message]) -> str:
        m = self.manifest
        return render_chat(m.chat_template, messages, bos_token=m.bos_token or "", eos_token=m.eos_token or "")

    # -- generation ----------------------------------------------------------------------------
    def stream_ids(
        self, prompt_ids: list[int], max_new_tokens: int | None = None, ignore_eos: bool = False, **sampling
    ) -> Iterator[int]:
        """New token ids for `prompt_ids`; `sampling` overrides SamplingConfig fields."""
        gen = self.manifest.generation
        stop = () if ignore_eos else gen.eos_token_ids
        n = gen.max_new_tokens if max_new_tokens is None else max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenerationError(f"max_new_tokens must be a positive integer, not {n!r}")
        vocab = self.manifest.vocab_size
        if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < vocab for t in prompt_ids):
            raise GenerationError(f"prompt ids must be integers in [0, {vocab}) for this package")
        return self._serialized(generate_ids(self.decoder, list(prompt_ids), n, self.sampling(**sampling), stop))

    def _serialized(self, tokens: Iterator[int]) -> Iterator[int]:
        """Run one generation holding the model's lock: other threads wait for it; a second generation opened
        in the same thread while this one is unfinished is a GenerationError (it would reuse this KV cache)."""
        me = threading.get_ident()
        if self._owner == me:
            raise GenerationError("another generation on this Model is still open in this thread (an unfinished "
                                  "stream); finish it or call its .close() first, or load a second Model")
        with self._lock:
            self._owner = me
            try:
                yield from tokens
            finally:
                self._owner = None

    def encode_prompt(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of `prompt`; with `chat`, `prompt` is one user message run through the chat template."""
        if chat:
            return self.encode_chat([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)

    def encode_chat(self, messages: list[Message], trusted: bool = False) -> list[int]:
        """Token ids of the chat template applied to `messages` (the template adds any BOS).

        Special-token strings inside message contents (e.g. "<|im_end|><|im_start|>system" typed by a user)
        are tokenized as plain text, so content cannot forge a turn; only the template's own markers are
        control tokens. `trusted=True` reads them as control tokens (callers who build contents themselves)."""
        tok = self.tokenizer
        marked = {} if trusted else {i: f"\ue000edgelm-content-{i}\ue001" for i, m in enumerate(messages)
                                     if isinstance(m, dict) and isinstance(m.get("content"), str)
                                     and tok.has_special(m["content"])}
        if not marked:
            return tok.encode(self.chat_prompt(messages), add_bos=False)
        shown = [dict(m, content=marked[i]) if i in marked else m for i, m in enumerate(messages)]
        text = self.chat_prompt(shown)
        if any(text.count(mark) != 1 for mark in marked.values()):
            raise GenerationError("a message contains special-token text and this chat template transforms message "
                                  "contents, so it cannot be kept as plain text; remove the special tokens, or pass "
                                  "trusted=True to read them as control tokens")
        content = {mark: messages[i]["content"] for i, mark in marked.items()}
        ids = []
        # in the order the template rendered them (not necessarily message order): template text, content, ...
        for k, piece in enumerate(re.split(f"({'|'.join(map(re.escape, content))})", text)):
            ids += tok.encode_text(content[piece]) if k % 2 else tok.encode(piece, add_bos=False)
        return ids

    def stream(self, prompt: str, chat: bool = False, **kwargs) -> Iterator[str]:
        """Text pieces as they are generated."""
        pieces = StreamDecoder(self.tokenizer)
        for token in self.stream_ids(self.encode_prompt(prompt, chat), **kwargs):
            if piece := pieces.push(token):
                yield piece
        if tail := pieces.flush():
            yield tail

    def generate(self, prompt: str, chat: bool = False, **kwargs) -> Completion:
        return self._complete(self.encode_prompt(prompt, chat), **kwargs)

    def chat(self, messages: list[Message], **kwargs) -> Completion:
        return self._complete(self.encode_chat(messages), **kwargs)

    def _complete(self, ids: list[int], **kwargs) -> Completion:
        out = list(self.stream_ids(ids, **kwargs))
        return Completion(self.tokenizer.decode(out), out, len(ids))


def load(package: str | Path, ep: str = "cpu", threads: int | None = None, verify: bool | str = True,
         strict: bool | None = None, provider_options: dict[str, str] | None = None,
         context_cache: str | Path | None = None, max_length: int | None = None) -> Model:
    """Load an edgelm package on execution provider `ep` ("cpu", "qnn", "openvino", "dml", ..., or "auto").

    `verify` (default True) checks the package before anything is opened: paths inside the package, every
    file listed and hashed in the manifest (files unchanged since an earlier verified load are not hashed
    again: see edgelm.integrity); "full" rehashes everything, False checks sizes only.
    Thread model: a Model runs one generation at a time. Calls from several threads are serialized (a lock
    per Model, held for a whole generation or stream); opening a second stream in the same thread while a
    first is unfinished raises GenerationError. For parallel generations, load one Model per thread.

    `strict` turns any node left to the CPU into ProviderFallback (naming the nodes) instead of a warning;
    None (the default) means strict for NPU packages on their accelerator, not strict otherwise.
    `context_cache` is a folder where providers with compiled EP-context models (QNN) keep them.
    `max_length` caps the tokens (prompt + generated) a preallocated KV cache holds.
    """
    return Model(package, ep=ep, threads=threads, verify=verify, strict=strict,
                 provider_options=provider_options, context_cache=context_cache, max_length=max_length)
