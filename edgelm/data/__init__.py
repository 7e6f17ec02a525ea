"""Text the project ships: a small English corpus, used to train the synthetic presets' offline
tokenizer and to measure perplexity and agreement in `edgelm eval`."""

from pathlib import Path

CORPUS = Path(__file__).parent / "corpus.txt"
