"""The config contract: which config.json fields change the math, which of their values the native builder
implements, and which fields it may ignore. Data, read by every builder through its ArchSpec.

A config is first normalised (`normalize`): transformers >= 5 keeps rope settings under `rope_parameters`,
4.x under `rope_theta` / `rope_scaling`; both become `rope_theta` + `rope_scaling` here. Then `check`
compares it with an ArchSpec's `fields` (implemented) and `ignored` (harmless) tables: a field in neither,
or a value outside its set, is a `Declined` naming the field. The native builder refuses a declined config;
`--backend auto` hands it to optimum instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

# Bookkeeping every transformers config carries: names, versions, generation defaults, training-only
# switches, token ids (the package reads those from the config itself). None changes a forward pass.
COMMON_IGNORED = frozenset({
    "_name_or_path", "_model_name_or_path", "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "use_bfloat16", "torchscript", "tf_legacy_loss", "return_dict", "output_attentions", "output_hidden_states",
    "use_cache", "initializer_range", "attention_dropout", "id2label", "label2id", "problem_type",
    "finetuning_task", "prefix", "task_specific_params", "tokenizer_class", "bos_token_id", "eos_token_id",
    "pad_token_id", "sep_token_id", "decoder_start_token_id", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "chunk_size_feed_forward", "cross_attention_hidden_size", "tie_encoder_decoder",
    "output_router_logits", "is_decoder", "pretraining_tp",  # pretraining_tp: a training-time split of the same matmuls
})

TOKEN_ID_SUFFIXES = ("_token_id", "_token_ids")  # special-token ids (unk_token_id, ...): tokenizer business


@dataclass(frozen=True)
class Field:
    """A field that changes the math. `values`: the values implemented (None: any value, the builder reads
    it); `check`: a further test returning why a value is not implemented (or None); `default`: the value
    transformers assumes when the key is absent; `domain`: a test returning why a value is outside the field's
    mathematical domain (a negative rope base, a zero epsilon): such a config is broken for every backend, and
    `open_source` refuses it by name before any export (NaN logits would follow otherwise)."""

    values: tuple | None = None
    check: Callable[[Any], str | None] | None = None
    default: Any = None
    domain: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class Declined:
    """One reason the native builder declines a config."""

    field: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.field}={self.value!r}: {self.reason}"


# rope_scaling kinds and the keys each needs (edgelm.export.native.rope implements them)
ROPE_KINDS = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
             "original_max_position_embeddings"}


def rope_kind(scaling: dict | None) -> str:
    return (scaling or {}).get("rope_type") or (scaling or {}).get("type") or "default"


def check_rope(scaling: Any) -> str | None:
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        return "expected an object"
    kind = rope_kind(scaling)
    if kind not in ROPE_KINDS:
        return f"rope type {kind!r} is not implemented (native: {', '.join(ROPE_KINDS)})"
    missing = [k for k in ROPE_KINDS[kind] if k not in scaling]
    if missing:
        return f"rope type {kind!r} needs {', '.join(missing)}"
    extra = sorted(set(scaling) - ROPE_KEYS)
    if extra:  # e.g. attention_factor, mrope_section: settings the native rotary does not apply
        return f"rope setting(s) {', '.join(extra)} not implemented"
    return None


def normalize(config: dict[str, Any]) -> tuple[dict[str, Any], list[Declined]]:
    """A copy of `config` in the 4.x layout (rope_theta + rope_scaling), and what could not be mapped."""
    out = dict(config)
    params = out.pop("rope_parameters", None)
    if params is None:
        return out, []
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        # per-layer-type rope settings (Gemma-3's sliding/full layers): not a layout these specs have
        return out, [Declined("rope_parameters", params, "per-layer-type rope parameters are not implemented")]
    params = dict(params)
    if "rope_theta" in params:
        out["rope_theta"] = params.pop("rope_theta")
    out["rope_scaling"] = None if rope_kind(params) == "default" and set(params) <= {"rope_type", "type"} else params
    return out, []


def check(config: dict[str, Any], fields: dict[str, Field], ignored: frozenset[str]) -> list[Declined]:
    """Every field of a normalised `config` that the native builder does not implement, with the reason."""
    declined = []
    for key, value in config.items():
        if key in fields:
            spec = fields[key]
            if spec.values is not None and value not in spec.values:
                choices = ", ".join(repr(v) for v in spec.values)
                declined.append(Declined(key, value, f"not implemented (native: {choices})"))
            elif spec.check is not None and (why := spec.check(value)):
                declined.append(Declined(key, value, why))
        elif value is not None and key not in ignored and key not in COMMON_IGNORED \
                and not key.endswith(TOKEN_ID_SUFFIXES):  # null: as if absent
            declined.append(Declined(key, value, "unknown to the native builder's contract for this architecture"))
    return declined


def positive_even(value: Any) -> str | None:
    return None if value is None or (isinstance(value, int) and value > 0 and value % 2 == 0) else \
        "rotary needs a positive even head_dim"


def is_false(value: Any) -> str | None:
    return None if not value else "not implemented (native: false)"


def empty(value: Any) -> str | None:
    return None if not value else "not implemented (native: empty)"


def _number(value: Any) -> bool:
    # an int is finite however large (math.isfinite would overflow converting 10**400 to a float)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (isinstance(value, int)
                                                                                or math.isfinite(value))


def positive_number(value: Any) -> str | None:
    ok = value is None or (_number(value) and value > 0)
    return None if ok else "expected a positive finite number or null"


def positive_integer(value: Any) -> str | None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
    return None if ok else "expected a positive integer"


# rope_scaling's numeric settings and their domains (the kinds' own keys are checked by check_rope)
_ROPE_DOMAINS = {"factor": positive_number, "low_freq_factor": positive_number,
                 "high_freq_factor": positive_number, "original_max_position_embeddings": positive_integer,
                 "rope_theta": positive_number}


def rope_domain(scaling: Any) -> str | None:
    """Why rope_scaling's numbers are outside their domain (a factor <= 0 divides a frequency by zero or
    flips it; llama3's smoothing divides by high_freq_factor - low_freq_factor; longrope's factors divide the
    inverse frequencies), or None."""
    if not isinstance(scaling, dict):
        return None
    for key, domain in _ROPE_DOMAINS.items():
        if key in scaling and (why := domain(scaling[key])):
            return f"{key} = {scaling[key]!r}: {why}"
    low, high = scaling.get("low_freq_factor"), scaling.get("high_freq_factor")
    if rope_kind(scaling) == "llama3" and _number(low) and _number(high) and high <= low:
        return f"high_freq_factor ({high}) must exceed low_freq_factor ({low})"
    for key in ("short_factor", "long_factor"):
        factors = scaling.get(key)
        if isinstance(factors, list) and not all(_number(x) and x > 0 for x in factors):
            return f"{key} holds a value that is not a positive finite number"
    return None


def domain_problems(config: dict[str, Any], fields: dict[str, Field]) -> list[str]:
    """`key = value (why)` for every field of a normalised `config` whose value is outside its domain."""
    problems = []
    for key, spec in fields.items():
        value = config.get(key)
        if value is not None and spec.domain is not None and (why := spec.domain(value)):
            problems.append(f"{key} = {value!r} ({why})")
    return problems
