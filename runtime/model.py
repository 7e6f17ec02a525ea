"""The runtime's public object: a loaded package that generates, streams and chats."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path


from edgelm.errors import GenerationError, PackageError, ProviderUnavailable, UsageError
from edgelm.manifest import Manifest
from edgelm.runtime.chat import Message, render_chat
from edgelm.runtime.contract import check_graph
from edgelm.runtime.decoder import DECODERS
from edgelm.runtime import options as options_
from edgelm.runtime.generate import STOP, Cancel, Outcome, generate_ids
from edgelm.runtime.speculative import SpecStats, speculation
from edgelm.runtime.options import OPTIONS, SAMPLING_OPTIONS, Request, Usage
from edgelm.runtime.partition import merged, partition_of
from edgelm.runtime.providers import choose_auto, device_kind, resolve
from edgelm.runtime.sampling import SamplingConfig
from edgelm.runtime.session import create_session
from edgelm.runtime.text import ReasoningSplit, StopStrings
from edgelm.runtime.tokenizer import StreamDecoder, TextTokenizer


TARGET_DEVICE = {"cpu": "cpu", "gpu": "gpu", "npu-qnn": "npu"}  # export target -> the device kind it is made for


class ProviderFallbackWarning(UserWarning):
    """Part of the graph runs on the CPU instead of the provider that was asked for."""


@dataclass(frozen=True)
class Completion:
    """A finished generation. `text` is the answer (for reasoning models without the chain of thought, which
    is `reasoning`); `token_ids` every generated token (stop strings' included)."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str = STOP
    reasoning: str | None = None
    cached_tokens: int = 0
    speculation: SpecStats | None = None  # with `speculate`: verification runs, draft tokens proposed and kept

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, len(self.token_ids), self.cached_tokens)


@dataclass(frozen=True)
class Delta:
    """One event of a stream: new answer text (`content`) and chain-of-thought text (`reasoning`), the token
    ids generated since the last event; the last event has `finish_reason` and `usage`."""

    content: str = ""
    reasoning: str = ""
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    speculation: SpecStats | None = None  # on the last event of a speculative generation


# Where speculation's verification (a run of several tokens) computes what one-token steps compute, so a verified
# draft gives the plain answer: quantization mode -> the MatMulNBits accuracy levels that do (None: any). Measured
# on SmolLM2, one run of 92 tokens against 92 single steps: fp32 and int4 at level 1 (float32 activations) within
# 1.2e-4 logits; int4 at level 4 (int8 activations) 2-3 apart, fp16 up to 0.08 apart: refused, as are the static
# NPU graphs (up to 0.1 apart on the QNN HTP simulator) and any provider but the CPU (not measured). The level-4
# cause is not MatMulNBits' rows (its several-row and one-row results are bitwise equal at block 32, 1e-6 apart at
# 128) but any rounding difference upstream (GroupQueryAttention's one-token path: 3e-8 in layer 0), which int8
# activations amplify layer by layer; even runs of 3 or 5 tokens differ from one run of 92 by 2.7 / 1.8 logits,
# so no grouping of plain steps would match.
EXACT_VERIFY = {"fp32": None, "int4": (0, 1), "int8": (0, 1)}


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
        _check_load_options(max_length, context_cache)
        self.path = Path(package)
        self.manifest = Manifest.load(self.path)
        self.manifest.verify(self.path, hashes=verify)
        self.verified = bool(verify)  # hashes checked at this load (bench records them as measured)
        self._lock = threading.Lock()  # one generation at a time: they share the decoder's KV cache
        self._owner: int | None = None  # the thread whose generation holds the lock
        self.provider = choose_auto(self.manifest.quantization.mode) if ep == "auto" else resolve(ep)
        for feature in self.manifest.features:  # right or refused: a provider known to get a feature wrong
            if why := self.provider.spec.wrong_features.get(feature):
                raise ProviderUnavailable(f"{self.provider.spec.name} cannot run this package correctly: {why}; "
                                          "use --ep cpu")
        if strict is None:  # NPU/GPU packages are made to run whole on such a provider: a fallback is an error
            kind = device_kind(self.provider.spec, self.provider.devices)
            strict = kind != "cpu" and TARGET_DEVICE.get(self.manifest.target) == kind
        opened: dict[str, object] = {}  # one session per graph file (an NPU package's one graph serves both roles)
        self.sessions = {}
        for role, name in self.manifest.graph_files().items():
            if name not in opened:
                opened[name] = self._session(role, name, threads, strict, provider_options, context_cache)
                check_graph(self.manifest, opened[name], name)
            self.sessions[role] = opened[name]
        self.session = next(iter(self.sessions.values()))
        self.partition = merged([partition_of(s, self.provider.spec.ort_name) for s in opened.values()])
        if self.partition.fallback:  # never silent: the caller asked for this provider
            p = self.partition
            warnings.warn(ProviderFallbackWarning(
                f"{len(p.fallback)} of {p.total} nodes fall back from {p.requested} ({self.provider.label}) to the CPU "
                f"(--strict / strict=True makes this an error):\n{p.summary()}"), stacklevel=2)
        gen = self.manifest.generation
        self.tokenizer = TextTokenizer(self.path / self.manifest.tokenizer_file, gen.bos_token_id, gen.add_bos)
        mode = self.manifest.kv_cache.mode
        if mode == "shared" and not self.provider.spec.in_place_kv:  # same graph, arrays swapped each step
            mode = "concat"
        self.kv_mode = mode
        if mode not in DECODERS:
            raise PackageError(f"KV-cache mode {mode!r} is unknown to this edgelm; upgrade edgelm")
        # max_length bounds the preallocated cache of "shared" packages (default: DEFAULT_CAPACITY tokens)
        self.decoder = DECODERS[mode](self.sessions, self.manifest, self.path, max_length)
        if mode != "static":  # static graphs run their own fixed chunks
            self.decoder.max_run = self.provider.spec.max_run_tokens

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

    def request(self, prompt_ids: list[int], *, split_reasoning: bool = False, thinking: bool = False,
                **options) -> Request:
        """A validated generation request (GenerationError names any bad argument). `options`: the generation
        options chat() lists (options.OPTIONS: max_new_tokens, temperature, top_k, top_p, min_p,
        repetition_penalty, seed, stop, stop_token_ids, ignore_eos, speculate); None = the package's default."""
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise GenerationError(f"unknown generation option(s) {', '.join(sorted(unknown))}; the options are "
                            f"{', '.join(OPTIONS)}")
        gen, vocab = self.manifest.generation, self.manifest.vocab_size
        ignore_eos = options.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise GenerationError(f"ignore_eos must be True or False, not {ignore_eos!r}")
        extra = options_.stop_token_ids(options.get("stop_token_ids"), vocab)
        n = options.get("max_new_tokens")
        return Request(
            prompt_ids=options_.prompt_ids(prompt_ids, vocab),
            max_new_tokens=options_.max_new_tokens(gen.max_new_tokens if n is None else n),
            sampling=self.sampling(**{k: options.get(k) for k in SAMPLING_OPTIONS}),
            stop=options_.stop_strings(options.get("stop")),
            stop_ids=extra if ignore_eos else extra | set(gen.eos_token_ids),
            split_reasoning=split_reasoning and self.manifest.reasoning is not None,
            thinking=thinking,
            speculate=self._speculate(options.get("speculate")),
        )

    def _speculate(self, spec):
        """The `speculate` option, checked now (a drafter name, a draft Model sharing the tokenizer, None)."""
        if spec is self:
            raise GenerationError("a model cannot draft for itself: load a smaller package as the draft")
        speculation(spec, self)  # raises GenerationError for anything else
        if spec is not None and (why := self._inexact_verify()):
            raise GenerationError(f"speculative decoding needs a run of several tokens to compute what one-token steps "
                                  f"compute, so that the answer is the plain answer; {why}")
        return spec

    def _inexact_verify(self) -> str | None:
        """Why a verification run would not compute what one-token steps compute here (None: it does)."""
        q = self.manifest.quantization
        if self.kv_mode == "static":  # measured: tiny-llama a16w8, 32 tokens in runs of 2-8 vs one-token steps
            return ("an NPU package's static graphs do not: a run of several real tokens differs from one-token runs "
                    "by up to 0.1 logits on the QNN HTP simulator, with different greedy tokens (0.09 on the CPU EP)")
        if self.provider.spec.name != "cpu":
            return f"that is measured on the CPU provider only, not on {self.provider.label}"
        if q.mode not in EXACT_VERIFY:
            return (f"{q.mode} packages are not measured to (it was for fp32, and int4/int8 at accuracy level 1; SmolLM2 "
                    "fp16 came out up to 0.08 logits apart); use an fp32 package or int4 exported with --accuracy-level 1")
        levels = EXACT_VERIFY[q.mode]
        if levels is not None and (q.accuracy_level or 0) not in levels:
            return (f"this package's MatMulNBits run at accuracy level {q.accuracy_level} (int8 activations), which turns "
                    "onnxruntime's small differences between a run of several tokens and one-token steps (3e-8 in the "
                    "first layer's attention) into different logits (SmolLM2 int4: 2-3 apart over 92 tokens); "
                    "re-export with --accuracy-level 1 to use speculation")
        return None

    # -- generation ----------------------------------------------------------------------------
    def stream_ids(
        self, prompt_ids: list[int], max_new_tokens: int | None = None, ignore_eos: bool = False, **sampling
    ) -> Iterator[int]:
        """New token ids for `prompt_ids` (no stop strings: ids only); `sampling` overrides SamplingConfig fields."""
        req = self.request(prompt_ids, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, **sampling)
        if req.stop:  # ids carry no text to find a string in: refused, not silently ignored
            raise GenerationError("stop strings need text: use chat() or complete() (stream_ids takes stop_token_ids)")
        return self._serialized(generate_ids(self.decoder, req.prompt_ids, req.max_new_tokens, req.sampling,
                                             req.stop_ids, speculation=speculation(req.speculate, self)))

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
        return self._encode_chat(messages, trusted)[0]

    def _encode_chat(self, messages: list[Message], trusted: bool = False) -> tuple[list[int], bool]:
        """(token ids, whether the rendered prompt ends by opening the reasoning)."""
        tok = self.tokenizer
        marked = {} if trusted else {i: f"\ue000edgelm-content-{i}\ue001" for i, m in enumerate(messages)
                                     if isinstance(m, dict) and isinstance(m.get("content"), str)
                                     and tok.has_special(m["content"])}
        shown = [dict(m, content=marked[i]) if i in marked else m for i, m in enumerate(messages)]
        text = self.chat_prompt(shown)
        think = self.manifest.reasoning
        thinking = think is not None and text.rstrip().endswith(think.start)
        if not marked:
            return tok.encode(text, add_bos=False), thinking
        if any(text.count(mark) != 1 for mark in marked.values()):
            raise GenerationError("a message contains special-token text and this chat template transforms message "
                                  "contents, so it cannot be kept as plain text; remove the special tokens, or pass "
                                  "trusted=True to read them as control tokens")
        content = {mark: messages[i]["content"] for i, mark in marked.items()}
        ids = []
        # in the order the template rendered them (not necessarily message order): template text, content, ...
        for k, piece in enumerate(re.split(f"({'|'.join(map(re.escape, content))})", text)):
            ids += tok.encode_text(content[piece]) if k % 2 else tok.encode(piece, add_bos=False)
        return ids, thinking

    def chat(
        self,
        messages: list[Message],
        *,
        stream: bool = False,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        stop_token_ids: list[int] | None = None,
        ignore_eos: bool = False,
        speculate=None,
        cancel: Cancel | None = None,
        reuse_cache: bool = True,
        trusted: bool = False,
        **unknown,
    ) -> Completion | Iterator[Delta]:
        """Answer the conversation `messages` ([{"role": "system"|"user"|"assistant", "content": str}, ...]).

        Returns a Completion, or with `stream=True` an iterator of Delta events (text as it is generated; the
        last one carries finish_reason and usage). For reasoning models (manifest `reasoning`) the chain of
        thought comes apart from the answer: Completion.reasoning / Delta.reasoning, and .text / .content.

        Sampling arguments left None take the package's defaults (temperature 0 = greedy). `stop`: strings
        that end the answer (not included); `stop_token_ids`: ids that end it. `cancel`: an object with
        is_set() (a threading.Event) polled before each token and between prefill runs; finish_reason is then
        "cancelled". `reuse_cache`: keep the keys/values of the part of the prompt the previous generation
        on this Model already ran (a chat's earlier turns) and prefill only the rest. `speculate`: speculative
        decoding, "prompt-lookup" (drafts from the conversation itself) or a smaller loaded package sharing the
        tokenizer; the same answer as without (greedy) or the same distribution (sampling), usually faster;
        Completion.speculation / the last Delta's say how many drafts were kept.
        finish_reason: "stop" (end of sequence, a stop string or id), "length" (max_new_tokens),
        "context_full" (the package's context is full), "cancelled".
        """
        given = {k: v for k, v in locals().items() if k in OPTIONS}  # the options named in the signature
        if unknown:  # a misspelt option (temprature=...): request() names it
            self.request([], **given, **unknown)
        ids, thinking = self._encode_chat(messages, trusted)
        req = self.request(ids, split_reasoning=True, thinking=thinking, **given)
        events = self.run(req, cancel=cancel, reuse_cache=reuse_cache)
        return events if stream else collect(events, req, self.manifest.reasoning is not None)

    def complete(
        self,
        prompt: str,
        *,
        stream: bool = False,
        cancel: Cancel | None = None,
        reuse_cache: bool = False,
        **kwargs,
    ) -> Completion | Iterator[Delta]:
        """Continue the raw text `prompt` (no chat template, no reasoning split). Keyword arguments as
        `request()` (max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop,
        stop_token_ids, ignore_eos, speculate); returns as chat()."""
        req = self.request(self.tokenizer.encode(prompt), **kwargs)
        events = self.run(req, cancel=cancel, reuse_cache=reuse_cache)
        return events if stream else collect(events, req, False)

    def stream(self, prompt: str, chat: bool = False, **kwargs) -> Iterator[str]:
        """Text pieces of the answer as they are generated (`chat`: `prompt` is one user message)."""
        events = (self.chat([{"role": "user", "content": prompt}], stream=True, reuse_cache=False, **kwargs) if chat
                  else self.complete(prompt, stream=True, **kwargs))
        return (e.content for e in events if e.content)

    def generate(self, prompt: str, chat: bool = False, **kwargs) -> Completion:
        """The whole answer at once (`chat`: `prompt` is one user message)."""
        if chat:
            return self.chat([{"role": "user", "content": prompt}], reuse_cache=False, **kwargs)
        return self.complete(prompt, **kwargs)

    def run(self, req: Request, cancel: Cancel | None = None, reuse_cache: bool = False) -> Iterator[Delta]:
        """Delta events of one validated request: text pieces (never a split UTF-8 character), cut at the first
        stop string, split into reasoning and content; the last event has finish_reason and usage."""
        outcome, spec = Outcome(), speculation(req.speculate, self)
        tokens = self._serialized(generate_ids(self.decoder, req.prompt_ids, req.max_new_tokens, req.sampling,
                                               req.stop_ids, cancel, reuse_cache, outcome, spec))
        return self._events(tokens, req, outcome, spec.stats if spec is not None else None)

    def _events(self, tokens: Iterator[int], req: Request, outcome: Outcome,
                spec: SpecStats | None = None) -> Iterator[Delta]:
        text, stops = StreamDecoder(self.tokenizer), StopStrings(req.stop)
        split = ReasoningSplit(self.manifest.reasoning, req.thinking) if req.split_reasoning else None
        produced, pending = 0, []

        def event(piece: str, final: bool = False) -> Delta | None:
            nonlocal pending
            reasoning, content = split.feed(piece) if split else ("", piece)
            if final and split:
                r, c = split.flush()
                reasoning, content = reasoning + r, content + c
            if not (reasoning or content):
                return None
            out, pending = Delta(content, reasoning, tuple(pending)), []
            return out

        try:
            for token in tokens:
                produced += 1
                pending.append(token)
                if e := event(stops.feed(text.push(token))):
                    yield e
                if stops.hit:
                    outcome.finish_reason = STOP
                    break
        finally:
            tokens.close()  # releases the model at once, also when the caller stops reading
        tail = "" if stops.hit else stops.feed(text.flush())
        tail += "" if stops.hit else stops.flush()
        if stops.hit:
            outcome.finish_reason = STOP
        if e := event(tail, final=True):
            yield e
        usage = Usage(len(req.prompt_ids), produced, outcome.cached_tokens)
        yield Delta(token_ids=tuple(pending), finish_reason=outcome.finish_reason or STOP, usage=usage, speculation=spec)


def collect(events: Iterator[Delta], req: Request, reasoning: bool) -> Completion:
    """The Completion the events of one request add up to."""
    content, thought, ids = [], [], []
    for e in events:
        content.append(e.content)
        thought.append(e.reasoning)
        ids += e.token_ids
        last = e
    return Completion("".join(content), ids, last.usage.prompt_tokens, last.finish_reason,
                      "".join(thought) if reasoning else None, last.usage.cached_tokens, last.speculation)


def _check_load_options(max_length, context_cache) -> None:
    """UsageError for a load option out of its domain, before anything is opened."""
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise UsageError(f"max_length must be a positive integer (tokens the KV cache holds), not {max_length!r}")
    if context_cache is not None:
        folder = Path(context_cache)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"context cache {folder} exists and is not a folder; give a folder (it is created if "
                             "missing)")
        if not folder.exists() and not folder.parent.is_dir():
            raise UsageError(f"context cache {folder}: its parent folder does not exist")


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
