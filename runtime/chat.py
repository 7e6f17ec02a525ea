"""Render a package's chat template (Jinja, as Hugging Face tokenizers define it) without transformers.

A template is code from the package: it renders in Jinja's immutable sandbox (no attribute access to
Python internals, no mutation), within a budget (RENDER_SECONDS of CPU time, checked as the template's own
code runs; RENDER_CHARS of output; string/list repetition and powers bounded), and every failure inside it
(a loop that never ends, a division by zero, a recursion, an error it raises itself) is one GenerationError.
"""

from __future__ import annotations

import operator
import sys
import time
from functools import lru_cache
from typing import Any

from edgelm.errors import GenerationError, first_line

Message = dict[str, str]
RENDER_SECONDS = 2.0
RENDER_CHARS = 1 << 20  # a prompt of a million characters is far past any context edgelm runs


class _Budget(Exception):
    pass


def _sandbox():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Bounded(ImmutableSandboxedEnvironment):
        """The immutable sandbox, with `*`, `**` and `+` checked so one expression cannot allocate gigabytes."""

        intercepted_binops = frozenset({"*", "**", "+"})

        def call_binop(self, context, operator_name, left, right):
            if operator_name == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise _Budget(f"exponent {right} in the chat template")
            if operator_name == "*" and _too_long(left, right):
                raise _Budget("a repetition past the render budget")
            result = {"*": operator.mul, "**": operator.pow, "+": operator.add}[operator_name](left, right)
            if isinstance(result, (str, list, tuple)) and len(result) > RENDER_CHARS:
                raise _Budget("a value past the render budget")
            return result

    return Bounded


def _too_long(left, right) -> bool:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > RENDER_CHARS:
            return True
    return False


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.exceptions import TemplateError

    def raise_exception(message: str):
        raise GenerationError(f"chat template refused the conversation: {message}")

    env = _sandbox()(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise GenerationError(f"the package's chat template does not parse: {first_line(exc, 200)}") from None
    except (RecursionError, MemoryError) as exc:
        raise GenerationError(f"the package's chat template does not parse: {type(exc).__name__}") from None


def _within_budget(render):
    """Run `render()` with a tracer that stops it past RENDER_SECONDS (the template's own Python frames report
    every line they run, loops included), restoring any tracer that was set before."""
    deadline = time.process_time() + RENDER_SECONDS
    count = [0]

    def local(frame, event, arg):
        count[0] += 1
        if count[0] % 256 == 0 and time.process_time() > deadline:
            raise _Budget(f"rendering took more than {RENDER_SECONDS:g} s of CPU")
        return local

    def tracer(frame, event, arg):
        return local

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return render()
    finally:
        sys.settrace(previous)


def render_chat(
    template: str | None,
    messages: list[Message],
    add_generation_prompt: bool = True,
    **special: Any,
) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}]); `special` carries bos/eos tokens."""
    if not template:
        raise GenerationError("this package has no chat template; run without --chat or re-export with one")
    if not isinstance(messages, list):
        raise GenerationError(f"messages must be a list of {{'role': ..., 'content': ...}}, not {type(messages).__name__}")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise GenerationError(f"a chat message needs a str 'role' and a str 'content', got {m!r}"[:300])
    compiled = _compile(template)

    def render() -> str:
        out, size = [], 0
        for piece in compiled.generate(messages=messages, add_generation_prompt=add_generation_prompt, **special):
            size += len(piece)
            if size > RENDER_CHARS:
                raise _Budget(f"output past {RENDER_CHARS} characters")
            out.append(piece)
        return "".join(out)

    try:
        return _within_budget(render)
    except GenerationError:
        raise
    except _Budget as exc:
        raise GenerationError(f"the package's chat template exceeded its render budget: {exc}") from None
    except Exception as exc:  # the template is the package's code: any failure in it is the package's
        raise GenerationError(f"the package's chat template failed to render: {type(exc).__name__}: "
                              f"{first_line(exc, 200)}") from None
