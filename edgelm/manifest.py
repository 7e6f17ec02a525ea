"""The package contract between export and runtime: `edgelm.json`.

A package is a folder holding an ONNX graph (+ external data), tokenizer files and this manifest. The
manifest says everything the runtime needs and must not guess: graph I/O names, the KV-cache layout,
quantization, context length, generation defaults, the chat template, a sha256 for every file and the
versions of the tools that made it. The runtime reads it; it never infers layout from input names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgelm.errors import PackageError
from edgelm.paths import path_problem

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20  # manifests are a few KB (a chat template included)
MANIFEST_NAME = "edgelm.json"
OWNER_MARKER = ".edgelm-owner"  # in a staging folder while an export writes it (edgelm.export.staging)
NOT_CONTENT = (MANIFEST_NAME, OWNER_MARKER)  # files of a package folder that are not listed in `files`


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class GraphIO:
    """Names of the graph's inputs and outputs; KV names are templates over `{layer}`."""

    input_ids: str
    logits: str
    past_key: str
    past_value: str
    present_key: str
    present_value: str
    attention_mask: str | None = None
    position_ids: str | None = None
    logits_to_keep: str | None = None  # int64 scalar input: how many last positions get logits
    # GPU packages (--target gpu) take what the CPU graph derives from attention_mask with int64 ops (which
    # GPU EPs such as WebGPU leave to the CPU) from the host instead: seqlens_k int32 (batch,) = tokens seen
    # - 1, total_sequence_length int32 scalar = the mask's width, logits_start int64 (1,) = -logits kept
    seqlens_k: str | None = None
    total_sequence_length: str | None = None
    logits_start: str | None = None

    def past_names(self, layer: int) -> tuple[str, str]:
        return self.past_key.format(layer=layer), self.past_value.format(layer=layer)

    def present_names(self, layer: int) -> tuple[str, str]:
        return self.present_key.format(layer=layer), self.present_value.format(layer=layer)


@dataclass(frozen=True)
class KVCache:
    """Per layer one key and one value tensor of shape (batch, kv_heads, seq, head_dim)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float32"
    layout: str = "batch,kv_heads,seq,head_dim"
    # concat: present = past + new (runtime swaps arrays); shared: one preallocated buffer per layer is
    # both past and present, written in place (GroupQueryAttention graphs)
    mode: str = "concat"


@dataclass(frozen=True)
class StaticGraphs:
    """Fixed-shape graphs for NPUs (kv_cache.mode "static"): `prefill_file` takes `chunk` tokens,
    `decode_file` `decode_tokens` (edgelm exports one graph serving both). They attend over `context` positions: the first context - N cache slots, fed as
    past (batch, kv_heads, context - N, head_dim), then the N new tokens, whose keys/values are the
    graphs' `present` outputs (batch, kv_heads, N, head_dim) that the runtime writes into its cache.
    `cos`/`sin` (1, N, rotary_dim) are rows of `rotary_file` (a .npy of (2 x sets, context, rotary_dim): per
    rope set cos, and sin with its first half negated; set j > 0 feeds `cos_j`/`sin_j`: Gemma-3's two rope
    bases); `mask` (1, 1, N, context) is 0 where a position is visible, else `mask_value`."""

    prefill_file: str
    decode_file: str
    chunk: int
    context: int
    rotary_file: str
    cos: str = "cos"
    sin: str = "sin"
    mask: str = "attention_bias"
    mask_value: float = -100.0
    # N of the decode graph: 1 for a separate one-token graph; `chunk` when one graph (prefill_file ==
    # decode_file) serves both, a decode step then being a run with one real token. A graph of N tokens
    # needs `context - N` past slots, so the longest sequence is context - decode_tokens + 1 tokens
    decode_tokens: int = 1
    # the graphs take embeddings, not ids: the runtime feeds `embeds` (1, N, hidden) = rows of
    # `embedding_file` (int8 (vocab, hidden)) times `embedding_scales_file` (float32 (vocab, groups)), one scale
    # per hidden / groups consecutive values of a row
    embeds: str = "inputs_embeds"
    embedding_file: str = "embeddings.npy"
    embedding_scales_file: str = "embedding_scales.npy"
    # role -> EP-context model compiled at export for the target's provider (QNN): loading it skips the
    # graph compilation; it is only valid for the provider and device it was compiled for
    context_models: dict[str, str] = field(default_factory=dict)
    context_provider: str = "qnn"
    compiled_nodes: dict[str, int] = field(default_factory=dict)  # role -> graph nodes on that provider at export
    # the QDQ graphs (prefill_file, decode_file and their weights) ship in the package: they run on other
    # providers (CPU) and recompile where the context binary does not load. False: only the context models
    portable: bool = True

    def rotary_inputs(self, sets: int) -> list[tuple[str, str]]:
        """The graphs' (cos, sin) input names for `sets` rope sets."""
        return rotary_names(self.cos, self.sin, sets)


def rotary_names(cos: str, sin: str, sets: int) -> list[tuple[str, str]]:
    """(cos, sin) input names per rope set: the pair itself, then `cos_1`/`sin_1`, ..."""
    return [(cos, sin) if j == 0 else (f"{cos}_{j}", f"{sin}_{j}") for j in range(sets)]


@dataclass(frozen=True)
class LayerPrecision:
    """One decoder layer of an LPBQ int4 NPU package: its output error measured at 4 and 8 bits on calibration
    runs (|quantized - float| / |what the layer adds to the residual stream|) and the bits it was given."""

    layer: int
    bits: int
    error_w4: float
    error_w8: float


@dataclass(frozen=True)
class LinearQuant:
    """One MatMulNBits linear of a package with a precision table: its graph name, bits, block and rounding."""

    name: str
    bits: int
    block_size: int
    rounding: str = "rtn"  # rtn (min/max) | search (weighted scale search) | gptq
    symmetric: bool = False


@dataclass(frozen=True)
class Quantization:
    mode: str  # fp32 | fp16 | int8 | int4 | qdq
    method: str | None = None  # e.g. "MatMulNBits", "float16"
    bits: int | None = None
    block_size: int | None = None
    mlp_block_size: int | None = None  # when the MLP linears use another block size than the rest
    symmetric: bool | None = None
    accuracy_level: int | None = None
    calibration: str | None = None  # how weights were prepared before rounding, e.g. "awq: 8 windows x 128 tokens"
    layers: tuple[LayerPrecision, ...] = ()  # NPU LPBQ int4: per decoder layer, measured (see LayerPrecision)
    mix: str | None = None  # the per-linear precision table (None: every linear at bits / block_size)
    linears: tuple[LinearQuant, ...] = ()  # with a table: every linear as built


@dataclass(frozen=True)
class Generation:
    """Defaults the runtime uses when the caller gives none."""

    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    add_bos: bool = False
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class WeightStats:
    """Bytes of the graph's constant tensors; `per_token` leaves out tables only read by Gather (one row a
    token), so it is what a decode step streams from memory."""

    total: int
    per_token: int


@dataclass(frozen=True)
class KldScore:
    """The package scored as `llama-perplexity --kl-divergence` scores a quantized file against full precision
    (`edgelm.bench.kld`: chunks of `n_ctx` tokens from an empty cache, the second half of each scored), the source
    model in transformers (float32) the reference: figures a user can set beside llama.cpp's."""

    kld: float  # mean KL(reference || package), nats
    kld_err: float  # its standard error
    same_top: float  # share of scored positions whose argmax agrees with the reference's
    ppl: float  # the package's perplexity on the scored tokens
    ppl_ref: float
    positions: int
    chunks: int
    n_ctx: int
    text: str


@dataclass(frozen=True)
class QualityCheck:
    """What the export's self-check measured: the package run on the CPU against its source model's own
    forward in transformers (float32), fed the same token ids. `text`: what was compared; the figures are
    over every position of `windows` (plain and chat-formatted), plus greedy continuations: the package's
    greedy tokens that the reference also picks, counted up to each continuation's first disagreement."""

    reference: str  # e.g. "transformers 4.57.6, float32 forward (weights stored as BF16)"
    text: str
    positions: int
    max_abs_logit_diff: float
    kl: float  # mean KL(reference || package) of the next-token distributions
    top1: float  # fraction of positions whose argmax agrees
    greedy_agreed: int
    greedy_total: int
    tolerance: float | None = None  # float packages: the max |logit diff| allowed (else the export fails)
    verdict: str = "pass"  # pass | warn: <why>  (a failing float package is never written)
    provider: str = "cpu"
    llama_kld: KldScore | None = None  # export --kld: scored as llama-perplexity does (None: not asked for)


@dataclass(frozen=True)
class Reasoning:
    """A reasoning model's think markers, found in its chat template at export: the chain of thought is the
    text between `start` and `end` (the template may already put `start` into the prompt)."""

    start: str
    end: str


@dataclass(frozen=True)
class Manifest:
    architecture: str
    model_type: str
    model_file: str
    io: GraphIO
    kv_cache: KVCache
    quantization: Quantization
    context_length: int
    vocab_size: int
    generation: Generation
    tokenizer_file: str = "tokenizer.json"
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    reasoning: Reasoning | None = None  # None: not a reasoning model (all generated text is the answer)
    # graph features a provider may compute wrongly (ProviderSpec.wrong_features refuses them), e.g.
    # "attention_softcap" (GroupQueryAttention's softcap, Gemma-2), "longrope" (whole-sequence runs past rope_switch)
    features: tuple[str, ...] = ()
    # longrope (Phi-3.5/4-mini): the total length past which the model rotates with its long factors. transformers
    # rotates every position with the factors of the sequence's current length, so the runtime re-runs the whole
    # sequence in the run that passes this length and never keeps long-rotated keys for a shorter sequence
    # (runtime.decoder.Decoder._keepable). None: one frequency set.
    rope_switch: int | None = None
    weights: WeightStats | None = None
    # what the package was exported for: cpu (dynamic shapes) | gpu (no int64 arithmetic: whole on GPU EPs)
    # | npu-qnn (static QDQ graph)
    target: str = "cpu"
    static: StaticGraphs | None = None
    quality: QualityCheck | None = None  # the export's self-check against its source (None: --no-check)
    # NPU packages: the same check through the compiled context binary on its provider (None: not compiled
    # at export, or that provider absent)
    device_quality: QualityCheck | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def graph_files(self) -> dict[str, str]:
        """Role -> ONNX file: {"model": ...}, or the static pair {"prefill": ..., "decode": ...}."""
        if self.static is not None:
            return {"prefill": self.static.prefill_file, "decode": self.static.decode_file}
        return {"model": self.model_file}

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        version = data.get("format_version")
        if not isinstance(version, int):
            raise PackageError("manifest has no integer 'format_version'; re-export the package")
        if version > FORMAT_VERSION:
            raise PackageError(
                f"package format {version} is newer than this edgelm understands ({FORMAT_VERSION}); "
                "upgrade edgelm"
            )
        manifest = _build(cls, data, "manifest")
        for where, value, ok in _BOUNDS(manifest):
            if not ok(value):
                raise PackageError(f"manifest {where} = {value!r} is out of range; re-export the package")
        _check_io_names(manifest)
        return manifest

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PackageError(f"{MANIFEST_NAME} is not valid JSON ({exc}); re-export the package") from None
        except RecursionError:
            raise PackageError(f"{MANIFEST_NAME} nests deeper than any manifest edgelm writes; re-export the "
                               "package") from None
        if not isinstance(data, dict):
            raise PackageError(f"{MANIFEST_NAME} must hold a JSON object; re-export the package")
        return cls.from_dict(data)

    # -- files ---------------------------------------------------------------------------------
    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        folder = Path(folder)
        problem = path_problem(folder)
        if problem == "does not exist":
            raise PackageError(f"package folder {folder} does not exist; create one with `edgelm export`")
        if problem:
            raise PackageError(f"package {folder} {problem}; give an edgelm package folder (made by `edgelm export`)")
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise PackageError(f"{folder} has no {MANIFEST_NAME}: it is not an edgelm package")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise PackageError(f"{path} is larger than any manifest edgelm writes; re-export the package")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise PackageError(f"{path} is not UTF-8 text; re-export the package") from None
        return cls.from_json(text)

    def verify(self, folder: str | Path, hashes: bool | str = True) -> None:
        """Paths confined to the package, every file listed, sizes, and (unless `hashes` is False) sha256:
        True reuses the stamps of files hashed before and unchanged since, "full" rehashes all
        (`edgelm.integrity`)."""
        from edgelm.integrity import verify

        verify(self, folder, hashes)


def _between(lo: float, hi: float):
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi


def _BOUNDS(m: Manifest) -> list[tuple[str, Any, Any]]:
    """(field, value, predicate) for every number the runtime sizes memory or loops by, and the sampling
    defaults; data, checked when a manifest is read."""
    kv, gen = m.kv_cache, m.generation
    rows = [
        ("context_length", m.context_length, _between(1, 1 << 24)),
        ("vocab_size", m.vocab_size, _between(1, 1 << 24)),
        ("kv_cache.num_layers", kv.num_layers, _between(1, 4096)),
        ("kv_cache.num_kv_heads", kv.num_kv_heads, _between(1, 4096)),
        ("kv_cache.head_dim", kv.head_dim, _between(1, 8192)),
        ("kv_cache.dtype", kv.dtype, lambda v: v in ("float32", "float16")),
        ("generation.temperature", gen.temperature, _between(0, 1e6)),
        ("generation.top_k", gen.top_k, _between(0, 1 << 24)),
        ("generation.top_p", gen.top_p, lambda v: _between(0, 1)(v) and v > 0),
        ("generation.repetition_penalty", gen.repetition_penalty, lambda v: _between(0, 1e6)(v) and v > 0),
        ("generation.max_new_tokens", gen.max_new_tokens, _between(1, 1 << 24)),
        ("generation.eos_token_ids", gen.eos_token_ids, lambda ids: all(_between(0, 1 << 24)(i) for i in ids)),
    ]
    if m.rope_switch is not None:
        rows.append(("rope_switch", m.rope_switch, _between(1, 1 << 24)))
    if m.reasoning is not None:
        marker = lambda v: 0 < len(v) <= 64  # noqa: E731
        rows += [("reasoning.start", m.reasoning.start, marker), ("reasoning.end", m.reasoning.end, marker)]
    if m.static is not None:
        rows += [("static.context", m.static.context, _between(1, 1 << 20)),
                 ("static.chunk", m.static.chunk, _between(1, m.static.context)),
                 ("static.decode_tokens", m.static.decode_tokens, _between(1, m.static.context))]
    return rows


def _check_io_names(m: Manifest) -> None:
    """Every io name a non-empty string; the KV templates format with `{layer}` alone and give each layer's key
    and value a name of its own (a template without {layer} would feed every layer one array)."""
    io = m.io
    for f in dataclasses.fields(io):
        value = getattr(io, f.name)
        if value is not None and (not value or len(value) > 1024 or "\0" in value):
            raise PackageError(f"manifest io.{f.name} = {value!r} is not a graph input/output name; re-export the package")
    names = []
    for key in ("past_key", "past_value", "present_key", "present_value"):
        template = getattr(io, key)
        try:
            names.append([template.format(layer=layer) for layer in range(m.kv_cache.num_layers)])
        except (KeyError, IndexError, ValueError, AttributeError, TypeError):
            raise PackageError(f"manifest io.{key} = {template!r} is not a name template over {{layer}}; re-export "
                               "the package") from None
    for group in (names[0] + names[1], names[2] + names[3]):
        if len(set(group)) != len(group):
            raise PackageError(f"manifest io KV templates give two cache tensors one name ({io.past_key!r}, "
                               f"{io.past_value!r}, {io.present_key!r}, {io.present_value!r}: each needs {{layer}} "
                               "and the key's differs from the value's); re-export the package")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file in the package folder except the manifest itself."""
    return {
        p.relative_to(folder).as_posix(): FileEntry(sha256_file(p), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in NOT_CONTENT
    }


def _build(tp: Any, value: Any, where: str) -> Any:
    """Build typed value `tp` from JSON data, raising PackageError on a shape mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PackageError(f"{where} must be an object in {MANIFEST_NAME}; re-export the package")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PackageError(f"{where}.{f.name} is missing from {MANIFEST_NAME}; re-export the package")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _build(next(a for a in args if a is not type(None)), value, where)
    if origin is tuple:
        (item, _) = typing.get_args(tp)
        items = value if isinstance(value, tuple) else _expect(list, value, where)  # JSON lists; to_dict's tuples
        return tuple(_build(item, v, where) for v in items)
    if origin is dict:
        _, item = typing.get_args(tp)
        return {str(k): _build(item, v, f"{where}.{k}") for k, v in _expect(dict, value, where).items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return _expect(tp, value, where)


def _expect(tp: type, value: Any, where: str) -> Any:
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise PackageError(
            f"{where} in {MANIFEST_NAME} should be {tp.__name__}, got {type(value).__name__}; "
            "re-export the package"
        )
    return value
