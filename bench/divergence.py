"""`edgelm eval --kld REF CANDIDATE...`: edgelm packages, HF folders and GGUF files scored against one reference
with llama-perplexity's KLD scoring (`edgelm.bench.kld`), one row each.

The token ids come from the first edgelm package among the reference and the candidates (its tokenizer, its
BOS rule), and every source is fed those same ids, as llama-perplexity feeds the tokens it stored with the
base logits; sources must share the vocabulary (a GGUF converted from the same model does).
"""

from __future__ import annotations

from pathlib import Path

from edgelm.bench.kld import N_CTX, KldResult, license_text, score
from edgelm.errors import BenchError
from edgelm.manifest import MANIFEST_NAME
from edgelm.progress import as_progress


class PackageSource:
    """An edgelm package's logits, each chunk from an empty cache."""

    def __init__(self, path: Path, ep: str = "cpu"):
        from edgelm.runtime import load

        self.model = load(path, ep=ep)
        m = self.model.manifest
        self.bytes = sum(m.files[name].bytes for name in m.files
                         if name.endswith((".onnx", ".onnx.data", ".npy", ".bin")))

    def logits(self, ids: list[int]):
        self.model.decoder.reset()
        return self.model.decoder.forward(ids, last_only=False)


class GgufSource:
    """A GGUF file through llama-cpp-python (llama.cpp's own kernels), every position's logits kept."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BenchError(f"{path.name}: scoring a GGUF file needs llama-cpp-python (pip install "
                             "llama-cpp-python: it builds llama.cpp)") from None
        self.llm = Llama(str(path), n_ctx=max(N_CTX, 512), logits_all=True, verbose=False,
                         **({"n_threads": threads} if threads else {}))
        self.bytes = path.stat().st_size

    def logits(self, ids: list[int]):
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[:len(ids)], dtype=np.float32)


class HfSource:
    """An HF folder through transformers, float32."""

    def __init__(self, path: Path):
        from edgelm.bench.quality import TorchReference

        self.ref = TorchReference(path)
        self.bytes = sum(p.stat().st_size for p in path.glob("*.safetensors"))

    def logits(self, ids: list[int]):
        return self.ref.logits(ids)


def open_source(path: str | Path, ep: str = "cpu"):
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return PackageSource(path, ep)
    if path.suffix == ".gguf" and path.is_file():
        return GgufSource(path)
    if (path / "config.json").is_file():
        return HfSource(path)
    raise BenchError(f"{path} is neither an edgelm package, a GGUF file nor a Hugging Face model folder")


def token_ids(sources: list, text: str) -> tuple[list[int], int | None]:
    """The text's ids by the first edgelm package's own tokenizer, and its BOS id where the model adds one."""
    model = next(s.model for s in sources if isinstance(s, PackageSource))
    gen = model.manifest.generation
    return model.tokenizer.encode(text), gen.bos_token_id if gen.add_bos else None


def kld_table(reference: str | Path, candidates: list[str | Path], text: str | None = None, n_ctx: int = N_CTX,
              ep: str = "cpu", progress=False) -> list[tuple[str, int, KldResult]]:
    """(name, model bytes, KldResult) for each candidate against `reference`."""
    paths = [Path(reference), *map(Path, candidates)]
    for path in paths:
        if not path.exists():
            raise BenchError(f"{path} does not exist")
    if not any((path / MANIFEST_NAME).is_file() for path in paths):  # before any model is loaded
        raise BenchError("--kld needs an edgelm package among the reference and the candidates (its tokenizer makes "
                         "the ids every source is fed)")
    text = text if text is not None else license_text()
    progress = as_progress(progress)
    with progress.stage(f"load {len(paths)} models"):
        ref = open_source(paths[0], ep)
        sources = {str(p): open_source(p, ep) for p in paths[1:]}
    ids, bos = token_ids([ref, *sources.values()], text)
    total = len(ids) // n_ctx
    with progress.stage(f"score {total} chunks of {n_ctx} tokens", total=total, unit="chunk") as bar:
        results = score(ref, sources, ids, n_ctx, bos, bar)
    return [(Path(name).name, sources[name].bytes, results[name]) for name in sources]
