"""Render a package's chat template (Jinja, as Hugging Face tokenizers define it) without transformers."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from edgelm.errors import GenerationError

Message = dict[str, str]


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise GenerationError(f"chat template refused the conversation: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise GenerationError(f"the package's chat template does not parse: {exc}") from None


def render_chat(
    template: str | None,
    messages: list[Message],
    add_generation_prompt: bool = True,
    **special: Any,
) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}]); `special` carries bos/eos tokens."""
    if not template:
        raise GenerationError("this package has no chat template; run without --chat or re-export with one")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise GenerationError(f"a chat message needs 'role' and 'content', got {m!r}")
    from jinja2.exceptions import TemplateError

    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
    except TemplateError as exc:
        raise GenerationError(f"the package's chat template failed to render: {exc}") from None
