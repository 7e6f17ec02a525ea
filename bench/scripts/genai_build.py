"""onnxruntime-genai's model builder (run it with the python of its own venv), with one compatibility fix.

transformers 5 keeps Gemma-3's rope settings per layer type (`rope_parameters = {"full_attention": {...},
"sliding_attention": {...}}`); onnxruntime-genai 0.18's builder reads `rope_parameters["rope_type"]`,
`rope_theta` and the 4.x attribute `rope_local_base_freq`, and fails on the nested form (KeyError: 'rope_type').
Before its builder runs, such a config gets the 4.x attributes back: the full-attention settings as
`rope_parameters` / `rope_theta`, the sliding ones' theta as `rope_local_base_freq`. Nothing else changes.
Arguments are the builder's: python genai_build.py -i HF_FOLDER -o OUT -p int4 -e cpu
"""

import runpy

import transformers

_from_pretrained = transformers.AutoConfig.from_pretrained.__func__


def _flat_rope(config) -> None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and {"full_attention", "sliding_attention"} <= set(params):
        config.rope_local_base_freq = params["sliding_attention"]["rope_theta"]
        config.rope_parameters = dict(params["full_attention"])
        config.rope_theta = params["full_attention"]["rope_theta"]


def _patched(cls, *args, **kwargs):
    config = _from_pretrained(cls, *args, **kwargs)
    for c in (config, getattr(config, "text_config", None)):
        if c is not None:
            _flat_rope(c)
    return config


transformers.AutoConfig.from_pretrained = classmethod(_patched)
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
