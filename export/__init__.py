"""edgelm.export: a Hugging Face model folder (or a GGUF file, or a synthetic preset) -> an edgelm package.

torch, transformers and optimum are imported lazily, inside the functions that need them.
"""

from edgelm.export.arch import ArchSpec, get_arch, registered_architectures
from edgelm.export.config import ExportConfig, QuantConfig
from edgelm.export.pipeline import export_model, export_synthetic

__all__ = ["ArchSpec", "ExportConfig", "QuantConfig", "export_model", "export_synthetic", "get_arch", "registered_architectures"]
