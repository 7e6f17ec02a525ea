"""The ArchSpec base class and the registry that maps HF `architectures` strings to it."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from edgelm.errors import UnsupportedArchitecture
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


def get_arch(config: dict[str, Any]) -> ArchSpec:
    """The ArchSpec for an HF config dict; UnsupportedArchitecture if none is registered."""
    names = config.get("architectures") or []
    for name in names:
        if name in _REGISTRY:
            return _REGISTRY[name](name, config)
    raise UnsupportedArchitecture(names[0] if names else "<none in config.json>", list(_REGISTRY))


class ArchSpec:
    """What edgelm needs to know about one decoder-only architecture.

    The defaults fit the Llama family (RMSNorm, rotary, GQA, SwiGLU). Config key names are data:
    override `config_keys` where an architecture names a field differently.
    """

    model_type: ClassVar[str] = ""
    optimum_task: ClassVar[str] = "text-generation-with-past"
    native: ClassVar[bool] = True  # the native builder knows this layout
    # HF tensor names by role (data, per architecture); {i} is the layer. Biases are used where present.
    tensor_names: ClassVar[dict[str, str]] = {
        "embed": "model.embed_tokens.weight",
        "final_norm": "model.norm.weight",
        "lm_head": "lm_head.weight",
        "input_norm": "model.layers.{i}.input_layernorm.weight",
        "post_norm": "model.layers.{i}.post_attention_layernorm.weight",
        "q": "model.layers.{i}.self_attn.q_proj.weight",
        "k": "model.layers.{i}.self_attn.k_proj.weight",
        "v": "model.layers.{i}.self_attn.v_proj.weight",
        "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
        "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
        "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
        "o": "model.layers.{i}.self_attn.o_proj.weight",
        "gate": "model.layers.{i}.mlp.gate_proj.weight",
        "up": "model.layers.{i}.mlp.up_proj.weight",
        "down": "model.layers.{i}.mlp.down_proj.weight",
    }
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
        self.config = config

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
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def sliding_window(self) -> int | None:
        """Attention window, or None for full attention."""
        return None

    def tensor(self, role: str, layer: int | None = None) -> str:
        return self.tensor_names[role].format(i=layer)

    def kv_cache(self, dtype: str = "float32") -> KVCache:
        return KVCache(self.num_layers, self.num_kv_heads, self.head_dim, dtype)
