"""Generated text as it streams: cut at stop strings, split into reasoning and answer.

Both work on text pieces (what `StreamDecoder` emits), never on token ids, so a stop string or a think
marker split across tokens, or across pieces, is still found. Each holds back only the text that could be
the start of what it looks for, and lets the rest through at once.

    token ids -> StreamDecoder -> StopStrings -> ReasoningSplit -> (reasoning, content) deltas
"""

from __future__ import annotations

from edgelm.manifest import Reasoning as ThinkMarkers


def _held(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is a proper beginning of one of `markers`."""
    best = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:k]):
                best = k
                break
    return best


class StopStrings:
    """Cuts the text before the first stop string; `hit` tells whether one was found."""

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(stops)
        self.pending = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        """The text that is certainly before any stop string."""
        if not self.stops or self.hit:
            return "" if self.hit else piece
        text = self.pending + piece
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, self.pending = True, ""
            return text[: min(found)]
        keep = _held(text, self.stops)
        self.pending = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The text held back at the end of the generation (it never became a stop string)."""
        out, self.pending = self.pending, ""
        return out


class ReasoningSplit:
    """Routes text into reasoning and content.

    `thinking` says the prompt already opened the reasoning (the chat template ends with the start marker,
    as DeepSeek-R1-Distill's does); otherwise a reply that begins with the start marker (after blank space)
    opens it, and one that does not is all content. Reasoning ends at the end marker. Newlines right after a
    marker and right before the end marker are dropped, as the chat templates drop them when they render
    an earlier turn. A generation that stops inside the reasoning (length, a stop string) has no content.
    """

    def __init__(self, markers: ThinkMarkers, thinking: bool):
        self.markers = markers
        self.state = "reasoning" if thinking else "opening"
        self.pending = ""  # text held back: a possible marker, or newlines that may precede the end marker
        self.started = False  # some reasoning (content) was emitted: later newlines are kept

    def feed(self, piece: str) -> tuple[str, str]:
        """(reasoning, content) text that follows from `piece`."""
        text, self.pending = self.pending + piece, ""
        reasoning = content = ""
        while text:
            if self.state == "opening":
                stripped = text.lstrip()
                if stripped.startswith(self.markers.start):
                    text, self.state = stripped[len(self.markers.start):], "reasoning"
                elif self.markers.start.startswith(stripped):
                    self.pending, text = text, ""  # blank space or part of the marker: wait for more
                else:
                    self.state, self.started = "content", False
            elif self.state == "reasoning":
                at = text.find(self.markers.end)
                body, rest = (text, "") if at < 0 else (text[:at], text[at + len(self.markers.end):])
                if not self.started:
                    body = body.lstrip("\n")
                if at >= 0:
                    reasoning += body.rstrip("\n")
                    text, self.state, self.started = rest, "content", False
                    continue
                keep = _held(body, (self.markers.end,))
                tail = body[: len(body) - keep]
                hold = body[len(body) - keep:]
                newlines = len(tail) - len(tail.rstrip("\n"))  # trailing newlines wait: they may precede the end
                self.pending = tail[len(tail) - newlines:] + hold
                reasoning += tail[: len(tail) - newlines]
                self.started = self.started or bool(reasoning)
                text = ""
            else:
                if not self.started:
                    text = text.lstrip("\n")
                    self.started = bool(text)
                content += text
                text = ""
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        """What is held at the end of the generation."""
        text, self.pending = self.pending, ""
        if self.state == "reasoning":
            return text.rstrip("\n"), ""
        if self.state == "opening":  # only blank space or a part of the start marker came: that is content
            return "", text.strip()
        return "", text
