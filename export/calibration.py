"""Calibration text: token windows of the shipped corpus, the way the model will be used.

Both calibrated exports read these: the NPU target (activation ranges for QDQ) and int4/int8 with
activation-aware scaling (AWQ). The corpus ships with edgelm, so calibration never needs a download.
"""

from __future__ import annotations


def wide_text() -> str:
    """The shipped corpus, then Python's own language reference (the `pydoc_data.topics` that every CPython
    ships: ~65k words of English prose and code, PSF licence): enough distinct text that error-compensating
    rounding does not fit the corpus' ~700 tokens (4096 calibration tokens drawn from those alone left a
    rank-deficient second-moment matrix: GPTQ's error on other text grew 1.5x above plain rounding's)."""
    from edgelm.data import CORPUS

    parts = [CORPUS.read_text(encoding="utf-8")]
    try:
        from pydoc_data.topics import topics

        parts += [topics[name] for name in sorted(topics)]
    except ImportError:  # a Python built without it: the corpus alone
        pass
    return "\n".join(parts)


def calibration_windows(source, samples: int, length: int, wide: bool = False) -> list[list[int]]:
    """`samples` windows of `length` tokens, each starting at another line of the corpus (wrapping around;
    `wide`: of `wide_text()`). Every other window is wrapped in the model's chat template, when it has one: the
    first tokens of a sequence set the residual stream's massive activations, so calibration must start
    sequences the way use does."""
    from tokenizers import Tokenizer

    from edgelm.data import CORPUS
    from edgelm.runtime.chat import render_chat

    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    text = wide_text() if wide else CORPUS.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    template = source.chat_template()
    windows = []
    for i in range(samples):
        start = (i * len(lines)) // max(samples, 1)
        # from line `start`, wrapping around (enough lines for the window: a wide text is long)
        text = " ".join((lines[start:] + lines[:start])[:max(length, 8)])
        if template and i % 2 == 0:
            prompt = render_chat(template, [{"role": "user", "content": text}], bos_token=_token(source, "bos"),
                                 eos_token=_token(source, "eos"))
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        else:
            ids = tokenizer.encode(text).ids
        windows.append((ids * (1 + length // max(len(ids), 1)))[:length])
    return windows


def _token(source, kind: str) -> str:
    value = source.tokenizer_config.get(f"{kind}_token")
    return (value.get("content") if isinstance(value, dict) else value) or ""
