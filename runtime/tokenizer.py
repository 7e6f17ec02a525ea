"""Tokenizer wrapper over `tokenizers` (no transformers) and an incremental decoder for streaming."""

from __future__ import annotations

from pathlib import Path

from edgelm.errors import GenerationError, PackageError, first_line


class TextTokenizer:
    def __init__(self, path: Path, bos_token_id: int | None, add_bos: bool):
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise PackageError(f"cannot read tokenizer {path}: {exc}; re-export the package") from None
        self.bos_token_id = bos_token_id
        self.add_bos = add_bos and bos_token_id is not None
        self.path = path
        self.special_tokens = tuple(t.content for t in self._tok.get_added_tokens_decoder().values() if t.special)
        self._as_text = None  # a second tokenizer that reads special-token strings as plain text (lazy)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text (e.g. chat markers) are recognised."""
        if not isinstance(text, str):
            raise GenerationError(f"text to encode must be a str, not {type(text).__name__}")
        try:
            ids = self._tok.encode(text, add_special_tokens=False).ids
        except Exception as exc:  # e.g. a lone surrogate the tokenizer cannot encode
            raise GenerationError(f"cannot tokenize the text: {first_line(exc, 200)}") from None
        if (self.add_bos if add_bos is None else add_bos) and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def has_special(self, text: str) -> bool:
        """Whether `text` contains a special token's string (e.g. "<|im_start|>")."""
        return any(token in text for token in self.special_tokens)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text` with special-token strings read as plain text (user content, never control)."""
        if self._as_text is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.path))
            tok.encode_special_tokens = True
            self._as_text = tok
        try:
            return self._as_text.encode(text, add_special_tokens=False).ids
        except Exception as exc:
            raise GenerationError(f"cannot tokenize the text: {first_line(exc, 200)}") from None

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def vocab(self) -> dict[str, int]:
        """Token text -> id, added tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


class StreamDecoder:
    """Turns a stream of token ids into text pieces, never splitting a UTF-8 character or a word's space.

    It decodes a short window of ids twice (with and without the newest ones) and emits the difference,
    holding text back while it ends in an incomplete byte sequence (U+FFFD).
    """

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # ids up to here have been emitted

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        done = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) <= len(done) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done) :]
