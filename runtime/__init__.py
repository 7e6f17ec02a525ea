"""edgelm.runtime: run an edgelm package through ONNX Runtime. Depends on onnxruntime, numpy, tokenizers
and jinja2 only; never torch or transformers.

    model = edgelm.runtime.load("pkg", ep="cpu")
    for piece in model.stream("What is the capital of France?", chat=True, max_new_tokens=64):
        print(piece, end="", flush=True)
"""

from edgelm.runtime.model import Completion, Model, load
from edgelm.runtime.sampling import SamplingConfig

__all__ = ["Completion", "Model", "SamplingConfig", "load"]
