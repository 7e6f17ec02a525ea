"""Engines: one workload (prefill `pp` ids, then `tg` greedy single-token steps), several runtimes.

`edgelm` runs a package through edgelm.runtime; the peers are what a user would pick instead:
onnxruntime-genai (a genai model folder), optimum's ORTModelForCausalLM (on the package's own graph),
PyTorch eager (an HF folder) and llama.cpp (a GGUF file, timed by its own llama-bench). Each registers itself by name.
"""

from edgelm.bench.engines.base import ENGINES, Engine, EngineUnavailable, get_engine
from edgelm.bench.engines import edgelm_engine, genai_engine, llamacpp_engine, optimum_engine, torch_engine  # noqa: F401

__all__ = ["ENGINES", "Engine", "EngineUnavailable", "get_engine"]
