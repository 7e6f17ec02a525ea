"""Progress on stderr for work that takes more than a moment: every stage announces itself before it starts.

On a terminal each stage is a tqdm bar (its name, count, rate and time left) that stays as one line when
done. Elsewhere (a pipe, a log file, CI) plain lines, never bar redraws:

    edgelm: export ONNX: layers ...
    edgelm: export ONNX: layers: 12/30 layer, about 8 s left
    edgelm: export ONNX: layers: done in 13.1 s

Disabled (`-q`), nothing is written. The spine's own: stdlib only, tqdm when it is installed.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_EVERY = 5.0  # seconds between plain progress lines of one stage
DONE_AFTER = 1.0  # a plain "done" line for stages that took at least this long (quicker ones: just the start)


class Stage:
    """One stage of work: `update(n)` as units finish; a context manager."""

    def __init__(self, progress: "Progress", name: str, total: int | None, unit: str):
        self.progress, self.name, self.total, self.unit = progress, name, total, unit
        self.done = 0
        self.start = self.last = time.monotonic()
        self.first: float | None = None  # when the first unit was done
        self.first_done = 0
        self.bar = None
        if progress.enabled and progress.tty:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=name, unit=unit, leave=True, file=progress.stream,
                                dynamic_ncols=True)
            except ImportError:  # a runtime-only install: plain lines on the terminal too
                pass
        if self.bar is None:
            self.progress.say(f"{name} ...")

    def update(self, n: int = 1) -> None:
        now = time.monotonic()
        if self.first is None:  # the rate is measured from the first unit done: set-up time is not a unit's
            self.first, self.first_done = now, self.done + n
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if now - self.last >= PLAIN_EVERY:
            self.last = now
            left = ""
            if self.total and self.done > self.first_done:
                rate = (now - self.first) / (self.done - self.first_done)
                left = f", about {rate * (self.total - self.done):.0f} s left"
            count = f"{self.done}/{self.total}" if self.total else str(self.done)
            self.progress.say(f"{self.name}: {count} {self.unit}{left}")

    def set_total(self, total: int) -> None:
        """The number of units, once it is known."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def close(self, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not failed and (took := time.monotonic() - self.start) >= DONE_AFTER:
            self.progress.say(f"{self.name}: done in {took:.1f} s")

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, exc_type, *_):
        self.close(failed=exc_type is not None)
        return False


class Progress:
    """Where stages report: `with progress.stage("quantize int4", total=30, unit="layer") as s: ... s.update()`."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, tty: bool | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty

    def stage(self, name: str, total: int | None = None, unit: str = "step") -> Stage:
        return Stage(self, name, total, unit)

    def say(self, text: str) -> None:
        """One plain line (never on a bar): `edgelm: text`."""
        if self.enabled:
            print(f"edgelm: {text}", file=self.stream, flush=True)


def as_progress(progress: bool | Progress | None) -> Progress:
    """A Progress from a flag (True: report, False/None: silent), or the one given."""
    if isinstance(progress, Progress):
        return progress
    return Progress(enabled=bool(progress))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
