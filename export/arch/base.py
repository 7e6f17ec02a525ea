"""The ArchSpec base class and the registry that maps HF `architectures` strings to it.

An ArchSpec is data: the checkpoint's tensor names by role, the config contract (`fields`: what changes the
math and which values are implemented; `ignored`: what does not), and which optional tensors (biases) a
config switches on. Builders read it; they never branch on the architecture's name.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from edgelm.errors import UnsupportedArchitecture
from edgelm.export.arch.contract import (Declined, Field, check, check_rope, domain_problems, empty, is_false, normalize,
                                         positive_even, positive_integer, positive_number, rope_domain)
from edgelm.export.native.activations import ACTIVATIONS
from edgelm.export.native.rope import rope_switch
from edgelm.manifest import KVCache

_REGISTRY: dict[str, type[ArchSpec]] = {}


def register(*names: str) -> Callable[[type[ArchSpec]], type[ArchSpec]]:
    """Class decorator: register an ArchSpec under one or more HF `architectures` strings."""

    def wrap(cls: type[ArchSpec]) -> type[ArchSpec]:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"architecture {name} registered twice")
            _REGISTRY[name] = cls
        return cls

    return wrap


def registered_architectures() -> list[str]:
    return sorted(_REGISTRY)


def get_arch(config: dict[str, Any], foreign: bool = False) -> ArchSpec:
    """The ArchSpec for an HF config dict. An unregistered architecture raises UnsupportedArchitecture, or
    with `foreign` gets a ForeignArch (no native builder; optimum may still export it)."""
    names = config.get("architectures") or []
    for name in names:
        if name in _REGISTRY:
            return _REGISTRY[name](name, config)
    if foreign and names:
        return ForeignArch(names[0], config)
    raise UnsupportedArchitecture(names[0] if names else "<none in config.json>", list(_REGISTRY))


# Fields of the Llama-shaped decoder every registered spec builds: read by the builders, any value
# (their domains: the shape fields' integer ranges are SHAPE_LIMITS; the rest are Field.domain)
_SHAPE = {name: Field() for name in ("num_hidden_layers", "num_attention_heads", "hidden_size",
                                     "vocab_size", "max_position_embeddings")}
LLAMA_FIELDS: dict[str, Field] = {
    **_SHAPE,
    "intermediate_size": Field(domain=positive_integer),
    "rms_norm_eps": Field(domain=positive_number),  # 1/sqrt(mean(x^2) + eps): eps <= 0 divides by zero
    "rope_theta": Field(domain=positive_number),  # theta ** (-2i/d): a base <= 0 gives NaN frequencies
    "num_key_value_heads": Field(),
    "head_dim": Field(check=positive_even),
    "tie_word_embeddings": Field((True, False), default=False),
    "hidden_act": Field(tuple(ACTIVATIONS), default="silu"),
    "rope_scaling": Field(check=check_rope, domain=rope_domain),
    # transformers PretrainedConfig switches that would change the graph if set
    "is_encoder_decoder": Field(check=is_false),
    "add_cross_attention": Field(check=is_false), "pruned_heads": Field(check=empty),
}
LLAMA_BIASES = {role: "attention_bias" for role in ("q_bias", "k_bias", "v_bias", "o_bias")} | \
               {role: "mlp_bias" for role in ("gate_bias", "up_bias", "down_bias")}


class ArchSpec:
    """What edgelm needs to know about one decoder-only architecture.

    The defaults fit the Llama family (RMSNorm, rotary, GQA, gated MLP). Config key names are data:
    override `config_keys` where an architecture names a field differently.
    """

    model_type: ClassVar[str] = ""
    optimum_task: ClassVar[str] = "text-generation-with-past"
    native: ClassVar[bool] = True  # the native builder knows this layout
    # builder switches (data, read by every builder; never a branch on the architecture's name)
    qk_norm: ClassVar[bool] = False  # an RMSNorm over each head of q and k before rotary (roles q_norm, k_norm)
    # scalars (Granite): kind -> config key; kinds: embedding (x the embedding), residual (x each attention and
    # MLP output before the residual add), attention (the score scale, replacing 1/sqrt(head_dim)), logits (/)
    multiplier_keys: ClassVar[dict[str, str]] = {}
    # fused checkpoint tensors read as stored (Phi-3): role -> the roles it holds, in order
    fused: ClassVar[dict[str, tuple[str, ...]]] = {}
    norm_offset: ClassVar[float] = 0.0  # RMSNorm gains applied as (offset + w) (Gemma: 1)
    sandwich_norms: ClassVar[bool] = False  # a norm on the attention and MLP outputs too (attn_out_norm, mlp_out_norm)
    awq_forward: ClassVar[bool] = True  # the awq calibration forward models this architecture
    # HF tensor names by role (data, per architecture); {i} is the layer
    tensor_names: ClassVar[dict[str, str]] = {
        "embed": "model.embed_tokens.weight",
        "final_norm": "model.norm.weight",
        "lm_head": "lm_head.weight",
        "input_norm": "model.layers.{i}.input_layernorm.weight",
        "post_norm": "model.layers.{i}.post_attention_layernorm.weight",
        "q": "model.layers.{i}.self_attn.q_proj.weight",
        "k": "model.layers.{i}.self_attn.k_proj.weight",
        "v": "model.layers.{i}.self_attn.v_proj.weight",
        "o": "model.layers.{i}.self_attn.o_proj.weight",
        "gate": "model.layers.{i}.mlp.gate_proj.weight",
        "up": "model.layers.{i}.mlp.up_proj.weight",
        "down": "model.layers.{i}.mlp.down_proj.weight",
        "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
        "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
        "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
        "o_bias": "model.layers.{i}.self_attn.o_proj.bias",
        "gate_bias": "model.layers.{i}.mlp.gate_proj.bias",
        "up_bias": "model.layers.{i}.mlp.up_proj.bias",
        "down_bias": "model.layers.{i}.mlp.down_proj.bias",
    }
    layer_roles: ClassVar[tuple[str, ...]] = ("input_norm", "post_norm", "q", "k", "v", "o", "gate", "up", "down")
    # optional role -> the config flag that switches it on (True: always there)
    optional_roles: ClassVar[dict[str, str | bool]] = {}
    # checkpoint tensors that are not weights of the model (old checkpoints saved rotary buffers)
    ignored_tensor_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)
    # the config contract (see edgelm.export.arch.contract)
    fields: ClassVar[dict[str, Field]] = LLAMA_FIELDS
    ignored: ClassVar[frozenset[str]] = frozenset()
    config_keys: ClassVar[dict[str, str]] = {
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "hidden_size": "hidden_size",
        "context_length": "max_position_embeddings",
        "vocab_size": "vocab_size",
    }

    def __init__(self, name: str, config: dict[str, Any]):
        self.name = name
        self.raw_config = config
        self.config, self._layout_declined = normalize(config)

    def declined(self) -> list[Declined]:
        """Why the native builder cannot build this config exactly (empty: it can)."""
        if not self.native:
            return [Declined("architectures", self.name, "no native builder for this architecture")]
        declined = list(self._layout_declined)
        if self.config.get("model_type", self.model_type) != self.model_type:  # transformers builds by model_type
            declined.append(Declined("model_type", self.config["model_type"], f"the {self.name} spec is for "
                                     f"{self.model_type!r}"))
        declined += check(self.config, self.fields, self.ignored)
        if not declined and self.partial_rotary and (self.rotary_dim // 2) % 8:  # GroupQueryAttention's own rule
            declined.append(Declined("partial_rotary_factor", self.setting("partial_rotary_factor"),
                                     f"rotary on {self.rotary_dim} of {self.head_dim} dims: GroupQueryAttention "
                                     "takes partial rotary in multiples of 16 dims"))
        return declined

    # shape fields the builders size memory and loops by: (key, largest value any real model has by far)
    SHAPE_LIMITS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("num_layers", 4096), ("num_heads", 4096), ("num_kv_heads", 4096), ("hidden_size", 1 << 17),
        ("vocab_size", 1 << 24), ("context_length", 1 << 30))

    def shape_problems(self) -> list[str]:
        """Shape fields that are not positive integers within SHAPE_LIMITS (a typo such as 1e9 layers would
        otherwise grow memory until the machine gives out)."""
        problems = []
        for key, limit in self.SHAPE_LIMITS:
            value = self._get(key)
            if value is None and (not self.native or key == "num_kv_heads"):
                continue  # unknown to a foreign spec (optimum reads its own config); kv heads default to heads
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                problems.append(f"{self.config_keys.get(key, key) if self.native else key} = {value!r} "
                                f"(expected an integer from 1 to {limit})")
        if not self.native or problems:
            return problems
        if self.num_heads % self.num_kv_heads:  # each kv head serves a whole group of query heads
            problems.append(f"{self.config_keys['num_heads']} = {self.num_heads} is not a multiple of "
                            f"{self.config_keys['num_kv_heads']} = {self.num_kv_heads}")
        return problems + domain_problems(self.config, self.fields)

    def setting(self, key: str) -> Any:
        """A contract field's value, or transformers' default when the key is absent."""
        value = self.config.get(key)
        return self.fields[key].default if value is None and key in self.fields else value

    def _get(self, key: str) -> Any:
        return self.config.get(self.config_keys[key])

    @property
    def num_layers(self) -> int:
        return int(self._get("num_layers"))

    @property
    def num_heads(self) -> int:
        return int(self._get("num_heads"))

    @property
    def num_kv_heads(self) -> int:
        return int(self._get("num_kv_heads") or self.num_heads)

    @property
    def hidden_size(self) -> int:
        return int(self._get("hidden_size"))

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self._get("hidden_size") // self.num_heads)

    @property
    def context_length(self) -> int:
        return int(self._get("context_length"))

    @property
    def vocab_size(self) -> int:
        return int(self._get("vocab_size"))

    @property
    def intermediate_size(self) -> int:
        return int(self.config["intermediate_size"])

    def out_features(self, role: str) -> int:
        """Output rows of a linear role's weight (the sizes a fused tensor is cut by)."""
        heads = {"q": self.num_heads, "k": self.num_kv_heads, "v": self.num_kv_heads}
        return heads[role] * self.head_dim if role in heads else self.intermediate_size

    @property
    def rms_norm_eps(self) -> float:
        return float(self.config.get("rms_norm_eps", 1e-6))

    @property
    def rope_theta(self) -> float:
        return float(self.config.get("rope_theta", 10000.0))

    @property
    def rope_scaling(self) -> dict | None:
        return self.config.get("rope_scaling")

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.setting("tie_word_embeddings"))

    @property
    def activation(self) -> str:
        return str(self.setting("hidden_act"))

    def layer_window(self, layer: int) -> int | None:
        """Layer `layer`'s attention window (keys within the last `window` positions, itself included), or None
        for full attention."""
        return None

    def multiplier(self, kind: str) -> float | None:
        """The config's scalar of `kind` (see multiplier_keys), or None where the model has none."""
        key = self.multiplier_keys.get(kind)
        return None if key is None else float(self.setting(key))

    @property
    def multipliers(self) -> dict[str, float]:
        """The scalars that change the math (a value of 1.0 changes nothing)."""
        return {k: v for k in self.multiplier_keys if (v := self.multiplier(k)) is not None and v != 1.0}

    def layer_rope_base(self, layer: int) -> tuple[float, dict | None]:
        """(rope theta, rope scaling) of layer `layer` (Gemma-3's sliding layers have their own)."""
        return self.rope_theta, self.rope_scaling

    @property
    def rope_switch(self) -> int | None:
        """longrope: the total length past which transformers rotates with the long factors (None: one set)."""
        return rope_switch(self.rope_scaling)

    @property
    def attention_scale(self) -> float | None:
        """The attention score scale, when not 1/sqrt(head_dim)."""
        return self.multiplier("attention")

    @property
    def embedding_scale(self) -> float | None:
        """A factor on the embedding (Granite's multiplier, Gemma's sqrt(hidden))."""
        return self.multiplier("embedding")

    @property
    def softcaps(self) -> dict[str, float]:
        """tanh soft-capping: "attention" scores and/or "logits", cap value each (Gemma-2/3)."""
        return {}

    @property
    def awq_supported(self) -> bool:
        return self.awq_forward and not self.fused

    def layer_rope(self, layer: int) -> bool:
        """Whether layer `layer` rotates q and k (False: a "NoPE" layer, SmolLM3)."""
        return True

    @property
    def rotary_dim(self) -> int:
        """Dims of each head that rotary turns (the first ones; Phi-4-mini: 0.75 x head_dim)."""
        factor = self.setting("partial_rotary_factor") if "partial_rotary_factor" in self.fields else 1.0
        return int(self.head_dim * (factor or 1.0))

    @property
    def partial_rotary(self) -> bool:
        return self.rotary_dim < self.head_dim

    @property
    def nope_layers(self) -> tuple[int, ...]:
        """The layers without rotary."""
        return tuple(i for i in range(self.num_layers) if not self.layer_rope(i))

    @property
    def smallest_window(self) -> int | None:
        windows = [w for w in (self.layer_window(i) for i in range(self.num_layers)) if w]
        return min(windows) if windows else None

    def uses(self, role: str) -> bool:
        """Whether this config's model has tensor `role`: optional roles follow their config flag."""
        if role in self.optional_roles:
            flag = self.optional_roles[role]
            return flag is True or bool(self.config.get(flag))
        if role == "lm_head":
            return not self.tied_embeddings
        return role in self.layer_roles or role in ("embed", "final_norm")

    def expected_tensors(self) -> set[str]:
        roles = [r for r in (*self.layer_roles, *self.optional_roles) if self.uses(r)]
        names = {self.tensor(r) for r in ("embed", "final_norm", "lm_head") if self.uses(r)}
        return names | {self.tensor(r, i) for r in roles for i in range(self.num_layers)}

    def unexpected_tensors(self, available) -> list[str]:
        """Checkpoint tensors this spec would not read (a tied checkpoint's saved lm_head copy aside)."""
        expected = self.expected_tensors() | {self.tensor("lm_head")}
        return sorted(n for n in available if n not in expected and not n.endswith(self.ignored_tensor_suffixes))

    def tensor(self, role: str, layer: int | None = None) -> str:
        return self.tensor_names[role].format(i=layer)

    def kv_cache(self, dtype: str = "float32") -> KVCache:
        return KVCache(self.num_layers, self.num_kv_heads, self.head_dim, dtype)


class ForeignArch(ArchSpec):
    """An architecture edgelm has no spec for: only optimum can export it. Shape fields are read under the
    names transformers' configs commonly use; the package's cache layout comes from the exported graph."""

    native = False
    fields = {}
    config_aliases: ClassVar[dict[str, tuple[str, ...]]] = {
        "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
        "num_heads": ("num_attention_heads", "n_head", "num_heads"),
        "num_kv_heads": ("num_key_value_heads", "num_attention_heads", "n_head"),
        "hidden_size": ("hidden_size", "n_embd", "d_model"),
        "context_length": ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
        "vocab_size": ("vocab_size",),
    }

    def _get(self, key: str) -> Any:
        for name in self.config_aliases[key]:
            if self.config.get(name) is not None:
                return self.config[name]
        return None

    @property
    def context_length(self) -> int:
        return int(self._get("context_length") or 2048)

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", True))
