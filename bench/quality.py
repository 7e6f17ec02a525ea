"""The accuracy cost of a package: perplexity on the shipped corpus and agreement with a reference.

- perplexity: exp(mean negative log-likelihood) of the corpus, teacher-forced, in windows of `window`
  tokens (each window starts fresh, so every package sees exactly the same contexts).
- agreement: the reference (an edgelm package, or an HF folder run by PyTorch) continues each prompt
  greedily for `n` tokens; the fraction of those positions where the candidate's top-1 equals the
  reference's, teacher-forced (one early difference does not poison the rest).
- divergence (same pass as perplexity): over the same windows, the mean KL divergence KL(reference || candidate) of
  the next-token distributions and their top-1 agreement, at every position: how far a quantized package
  moves from its float reference on text (the measure llama.cpp's perplexity tool reports as KLD).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.data import CORPUS
from edgelm.errors import BenchError
from edgelm.manifest import MANIFEST_NAME
from edgelm.progress import Progress, as_progress
from edgelm.runtime.sampling import log_softmax

WINDOW = 256  # tokens per perplexity window, unless the caller says otherwise

PROMPTS = (
    "The capital of France is",
    "A small language model on a phone",
    "To make bread, first",
    "The history of computing",
)


# Held out from everything edgelm ships (calibration reads the corpus), asked through the chat template
CHAT_PROMPTS = (
    "Write a short poem about the sea.",
    "What are three uses of a paperclip?",
    "Explain why the sky is blue in one sentence.",
    "Give me a recipe idea with rice and eggs.",
)


@dataclass(frozen=True)
class Quality:
    perplexity: float | None
    agreement: float | None = None
    reference: str | None = None
    kl: float | None = None  # mean KL(reference || package) over the perplexity text
    text_top1: float | None = None  # top-1 agreement with the reference over the perplexity text


def windows(model, text: str | None = None, window: int = WINDOW) -> list[list[int]]:
    """The token windows perplexity and divergence read: `text` (default the shipped corpus), each window
    starting fresh so every package sees exactly the same contexts."""
    ids = model.tokenizer.encode(text if text is not None else CORPUS.read_text(encoding="utf-8"))
    check_window(window, model.manifest.context_length)
    return [ids[i : i + window] for i in range(0, len(ids) - 1, window) if len(ids[i : i + window]) >= 2]


def _log_probs(model, chunk: list[int]) -> np.ndarray:
    model.decoder.reset()
    return log_softmax(model.decoder.forward(chunk, last_only=False))  # (n, vocab)


def check_window(window, context: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or not 2 <= window <= context:
        raise BenchError(f"window must be from 2 to the package's context length ({context}) tokens, not {window!r}")


def text_pass(model, reference=None, text: str | None = None, window: int = WINDOW) -> tuple[float, float | None, float | None]:
    """One pass of `model` over the text's windows: (perplexity, mean KL(reference || model), top-1 agreement
    with the reference at every position); the last two are None without a reference."""
    nll, count, kl, top = 0.0, 0, [], []
    chunks = windows(model, text, window)
    if not chunks:
        raise BenchError("the text has fewer than 2 tokens: nothing to measure; give a longer --text")
    for chunk in chunks:
        got = _log_probs(model, chunk)
        nll -= float(got[np.arange(len(chunk) - 1), chunk[1:]].sum())
        count += len(chunk) - 1
        if reference is not None:
            want = log_softmax(reference.logits(chunk))
            if want.shape != got.shape:
                raise BenchError(f"the reference's vocabulary ({want.shape[-1]}) is not the package's "
                                 f"({got.shape[-1]}): compare packages of the same model")
            kl.append((np.exp(want) * (want - got)).sum(-1))
            top.append(want.argmax(-1) == got.argmax(-1))
    if reference is None:
        return float(np.exp(nll / count)), None, None
    return float(np.exp(nll / count)), float(np.concatenate(kl).mean()), float(np.concatenate(top).mean())


def perplexity(model, text: str | None = None, window: int = WINDOW) -> float:
    return text_pass(model, None, text, window)[0]


class PackageReference:
    def __init__(self, path: Path):
        from edgelm.runtime import load

        self.model = load(path)

    def continuation(self, ids: list[int], n: int) -> list[int]:
        return list(self.model.stream_ids(ids, max_new_tokens=n, ignore_eos=True, temperature=0.0))

    def logits(self, ids: list[int]) -> np.ndarray:
        self.model.decoder.reset()
        return self.model.decoder.forward(ids, last_only=False)


class TorchReference:
    """An HF folder through transformers (needs the export extra)."""

    def __init__(self, path: Path):
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise BenchError("a Hugging Face reference needs torch and transformers (pip install 'edgelm[export]')")
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True,
                                                          attn_implementation="eager").eval()  # every feature applied
        self.model.generation_config.eos_token_id = None

    def continuation(self, ids: list[int], n: int) -> list[int]:
        t = self.torch
        with t.no_grad():
            out = self.model.generate(t.tensor([ids]), attention_mask=t.ones(1, len(ids), dtype=t.long),
                                      max_new_tokens=n, do_sample=False, pad_token_id=0)
        return out[0, len(ids):].tolist()

    def logits(self, ids: list[int]) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids])).logits[0].numpy()


def open_reference(path: str | Path):
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return PackageReference(path)
    if (path / "config.json").is_file():
        return TorchReference(path)
    raise BenchError(f"reference {path} is neither an edgelm package nor a Hugging Face model folder")


def agreement(model, reference, prompts=PROMPTS, n: int = 32, chat: bool = False) -> float:
    hits = []
    for text in prompts:
        ids = model.encode_prompt(text, chat=chat)
        cont = reference.continuation(ids, n)
        want = reference.logits(ids + cont)[len(ids) - 1 : -1].argmax(-1)
        model.decoder.reset()
        got = model.decoder.forward(ids + cont, last_only=False)[len(ids) - 1 : -1].argmax(-1)
        hits.extend(got == want)
    return float(np.mean(hits))


def evaluate(package: str | Path, ref: str | Path | None = None, window: int = WINDOW, ep: str = "cpu",
             chat: bool = False, with_perplexity: bool = True, text: str | None = None,
             divergence: bool = False, progress: bool | Progress = False) -> Quality:
    """Perplexity (on `text`, default the shipped corpus) and, with `ref`, agreement with it; `divergence`
    also compares every position of the text with the reference (in the same pass); `chat`: the agreement
    prompts are CHAT_PROMPTS through the chat template instead of PROMPTS."""
    from edgelm.runtime import load

    progress = as_progress(progress)
    from edgelm.manifest import Manifest

    check_window(window, Manifest.load(package).context_length)  # before anything is loaded
    with progress.stage(f"load {Path(package).name} on {ep}"):
        model = load(package, ep=ep)
    reference = None
    if ref is not None:
        with progress.stage(f"load the reference {ref}"):
            reference = open_reference(ref)
    ppl = kl = top = None
    if with_perplexity:
        what = "perplexity" + (" and divergence from the reference" if divergence and reference else "")
        with progress.stage(f"{what} on {'the given text' if text else 'the shipped corpus'} "
                            f"(windows of {window} tokens)"):
            ppl, kl, top = text_pass(model, reference if divergence else None, text, window)
    if reference is None:
        return Quality(ppl)
    prompts = CHAT_PROMPTS if chat else PROMPTS
    with progress.stage(f"greedy agreement with the reference ({len(prompts)} prompts x 32 tokens)"):
        agreed = agreement(model, reference, prompts, chat=chat)
    return Quality(ppl, agreed, str(ref), kl, top)
