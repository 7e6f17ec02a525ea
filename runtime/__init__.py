"""edgelm.runtime: run an edgelm package through ONNX Runtime. Depends on onnxruntime, numpy, tokenizers
and jinja2 only; never torch or transformers.

    model = edgelm.runtime.load("pkg", ep="cpu")
    answer = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=64)
    for event in model.chat(messages, stream=True):      # Delta events: .content, .reasoning, .finish_reason
        print(event.content, end="", flush=True)
"""

from edgelm.runtime.model import Completion, Delta, Model, load
from edgelm.runtime.options import Usage
from edgelm.runtime.sampling import SamplingConfig

__all__ = ["Completion", "Delta", "Model", "SamplingConfig", "Usage", "load"]
