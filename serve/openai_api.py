"""OpenAI's chat/completions wire format: request bodies -> edgelm requests, results -> response bodies.

Which body fields mean what is data (the tables below). A field edgelm does not implement is refused by
name (HTTP 400) unless it has its neutral value; an unknown field is refused (HTTP 422): nothing is silently
ignored but the bookkeeping fields OpenAI clients attach (`user`, `metadata`, `store`).
The values themselves are checked by the runtime's own validators (`Model.request`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from edgelm.runtime.generate import CANCELLED, CONTEXT_FULL, LENGTH, STOP


class ApiError(Exception):
    """An error answered with an OpenAI-style body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 415: "invalid_request_error",
                422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# body field -> (type check, what it must be, Model.request argument); "top_k", "min_p", "repetition_penalty"
# and "ignore_eos" are extensions that llama.cpp's or vLLM's servers take too
SAMPLING_FIELDS = {
    "max_tokens": (_integer, "an integer", "max_new_tokens"),
    "max_completion_tokens": (_integer, "an integer", "max_new_tokens"),
    "temperature": (_number, "a number", "temperature"),
    "top_p": (_number, "a number", "top_p"),
    "top_k": (_integer, "an integer", "top_k"),
    "min_p": (_number, "a number", "min_p"),
    "repetition_penalty": (_number, "a number", "repetition_penalty"),
    "seed": (_integer, "an integer", "seed"),
    "stop": (lambda v: isinstance(v, (str, list)), "a string or a list of strings", "stop"),
    "ignore_eos": (lambda v: isinstance(v, bool), "true or false", "ignore_eos"),
}
PARAMS = {arg: field for field, (_, _, arg) in reversed(SAMPLING_FIELDS.items())}  # request argument -> body field
COMMON_FIELDS = {
    "model": (lambda v: isinstance(v, str), "a string"),
    "stream": (lambda v: isinstance(v, bool), "true or false"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
}
CHAT_FIELDS = {"messages": (lambda v: isinstance(v, list) and v, "a non-empty list of messages")}
COMPLETION_FIELDS = {"prompt": (lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) == 1
                                                                 and isinstance(v[0], str)), "a string")}
IGNORED_FIELDS = ("user", "metadata", "store")  # bookkeeping that changes nothing in the answer
# features edgelm does not implement: accepted only with their neutral value
DECLINED_FIELDS = {
    "n": (1,), "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logprobs": (False, None, 0),
    "top_logprobs": (None, 0), "logit_bias": (None, {}), "tools": (None, []), "tool_choice": (None, "none"),
    "parallel_tool_calls": (None, False), "response_format": (None, {"type": "text"}), "echo": (False, None),
    "suffix": (None, ""), "best_of": (None, 1), "functions": (None, []), "function_call": (None, "none"),
    "reasoning_effort": (None,), "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,),
}
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content", "reasoning_content"})
FINISH = {STOP: "stop", LENGTH: "length", CONTEXT_FULL: "length", CANCELLED: "stop"}


@dataclass(frozen=True)
class Parsed:
    """A validated body: the request arguments and the wire options."""

    kwargs: dict
    stream: bool
    include_usage: bool
    messages: list | None = None
    prompt: str | None = None


def parse(body, chat: bool) -> Parsed:
    """The body of /v1/chat/completions (chat) or /v1/completions; ApiError 422 for a malformed one, 400 for
    a declined feature."""
    if not isinstance(body, dict):
        raise ApiError(422, "the request body must be a JSON object")
    own = CHAT_FIELDS if chat else COMPLETION_FIELDS
    for name, value in body.items():
        if name in IGNORED_FIELDS:
            continue
        if name in DECLINED_FIELDS:
            if value not in DECLINED_FIELDS[name]:
                raise ApiError(400, f"'{name}' is not supported by edgelm serve (only {DECLINED_FIELDS[name][0]!r})",
                               name, "unsupported_parameter")
            continue
        rule = SAMPLING_FIELDS.get(name) or COMMON_FIELDS.get(name) or own.get(name)
        if rule is None:
            raise ApiError(422, f"unknown field '{name}'", name, "unknown_parameter")
        if value is not None and not rule[0](value):
            raise ApiError(422, f"'{name}' must be {rule[1]}, not {value!r}"[:300], name, "invalid_type")
    for name in ("model", *own):
        if body.get(name) is None:
            raise ApiError(422, f"'{name}' is required", name, "missing_required_parameter")
    kwargs = {SAMPLING_FIELDS[k][2]: v for k, v in body.items() if k in SAMPLING_FIELDS and v is not None}
    options = body.get("stream_options") or {}
    if set(options) - {"include_usage"}:
        raise ApiError(400, f"stream_options {sorted(set(options) - {'include_usage'})} are not supported by edgelm "
                       "serve (only include_usage)", "stream_options", "unsupported_parameter")
    if chat:
        return Parsed(kwargs, bool(body.get("stream")), bool(options.get("include_usage")),
                      messages=[_message(m, i) for i, m in enumerate(body["messages"])])
    prompt = body["prompt"]
    return Parsed(kwargs, bool(body.get("stream")), bool(options.get("include_usage")),
                  prompt=prompt if isinstance(prompt, str) else prompt[0])


def _message(m, i: int) -> dict:
    """One chat message as the chat template takes it: role and text content (text parts joined)."""
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise ApiError(422, f"{where} must be an object with a role of {', '.join(ROLES)}", where, "invalid_type")
    content = m.get("content")
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise ApiError(400, f"{where}: only text content parts are supported", where, "unsupported_parameter")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError(422, f"{where}.content must be a string or a list of text parts", where, "invalid_type")
    unknown = sorted(set(m) - MESSAGE_KEYS)
    if unknown:  # e.g. tool_calls, name: the chat template would not carry them, so they are refused
        raise ApiError(400, f"{where}: {', '.join(unknown)} not supported by edgelm serve (only "
                       f"{', '.join(sorted(MESSAGE_KEYS))})", where, "unsupported_parameter")
    out = {"role": m["role"], "content": content}
    if isinstance(m.get("reasoning_content"), str):  # some templates render an earlier turn's reasoning
        out["reasoning_content"] = m["reasoning_content"]
    return out


class Responses:
    """Response bodies of one request (one id and creation time for all its chunks)."""

    def __init__(self, model_id: str, chat: bool):
        self.model, self.chat = model_id, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _base(self, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def usage(u) -> dict:
        return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens, "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}

    def whole(self, result) -> dict:
        """The non-streamed answer (a runtime Completion)."""
        finish = FINISH[result.finish_reason]
        if self.chat:
            message = {"role": "assistant", "content": result.text}
            if result.reasoning is not None:
                message["reasoning_content"] = result.reasoning
            choice = {"index": 0, "message": message, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": finish}
        return {**self._base(False), "choices": [choice], "usage": self.usage(result.usage)}

    def chunk(self, content: str = "", reasoning: str = "", finish: str | None = None, first: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else {}
            if content:
                delta["content"] = content
            if reasoning:
                delta["reasoning_content"] = reasoning
            choice = {"index": 0, "delta": delta, "finish_reason": FINISH.get(finish) if finish else None}
        else:
            choice = {"index": 0, "text": content, "logprobs": None,
                      "finish_reason": FINISH.get(finish) if finish else None}
        return {**self._base(True), "choices": [choice]}

    def usage_chunk(self, u) -> dict:
        return {**self._base(True), "choices": [], "usage": self.usage(u)}
