"""Architecture registry: each supported HF `architectures` string maps to a small ArchSpec subclass.

Adding an architecture is a short file in this folder that sets class attributes and registers itself
with `@register("XForCausalLM", ...)`; import it below.
"""

from edgelm.export.arch.base import ArchSpec, get_arch, register, registered_architectures
from edgelm.export.arch import gemma3, granite, llama, mistral, phi3, qwen2, qwen3, smollm3  # noqa: F401  (register themselves)

__all__ = ["ArchSpec", "get_arch", "register", "registered_architectures"]
