"""The ASGI app (Starlette): OpenAI-compatible routes over one loaded model, and the web chat page.

    GET  /                      the chat page (static files beside this module)
    GET  /health                {"status": "ok", "queue": {...}}; 503 while shutting down
    GET  /v1/models             the one model
    POST /v1/chat/completions   chat, streamed by SSE with "stream": true
    POST /v1/completions        raw text continuation

Errors are OpenAI-style bodies: 400 bad values (the runtime's validators), a declined feature or a body that
is not JSON, 401 a missing or wrong --api-key, 403 a foreign Host or Origin (edgelm.serve.guard), 404 an
unknown model or route, 413 a body over --max-body, 415 a body that is not application/json, 422 a malformed
body, 429 the queue full, 503 stopping.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgelm.errors import EdgeLMError
from edgelm.runtime.model import Completion
from edgelm.runtime.options import Usage
from edgelm.serve.guard import Access, Guard
from edgelm.serve.openai_api import PARAMS, ApiError, Parsed, Responses, parse
from edgelm.serve.limits import MAX_BODY, MAX_QUEUE
from edgelm.serve.scheduler import END, Scheduler

STATIC = Path(__file__).parent / "static"
DISCONNECT_POLL = 0.25  # seconds between checks that a non-streaming request's client is still there


class Server:
    """The routes' shared state: the model, its id, the scheduler and the limits."""

    def __init__(self, model, model_id: str, max_queue: int = MAX_QUEUE, max_body: int = MAX_BODY, speculate=None):
        self.model, self.model_id, self.max_body = model, model_id, max_body
        self.speculate = speculate  # every request's speculative decoding (edgelm serve --speculate)
        self.scheduler = Scheduler(model, max_queue)
        self.started = int(time.time())

    # -- routes --------------------------------------------------------------------------------
    async def health(self, request: Request) -> JSONResponse:
        if self.scheduler.closing:
            return JSONResponse({"status": "stopping"}, status_code=503)
        return JSONResponse({"status": "ok", "model": self.model_id, "provider": self.model.provider.spec.name,
                             "queue": self.scheduler.state()})

    def _model_card(self) -> dict:
        m = self.model.manifest
        return {"id": self.model_id, "object": "model", "created": self.started, "owned_by": "edgelm",
                "context_length": self.model.decoder.context_length, "quantization": m.quantization.mode,
                "reasoning": m.reasoning is not None}

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def one_model(self, request: Request) -> JSONResponse:
        self._check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    async def chat_completions(self, request: Request):
        return await self._generate(request, chat=True)

    async def completions(self, request: Request):
        return await self._generate(request, chat=False)

    async def index(self, request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    # -- generation ----------------------------------------------------------------------------
    async def _generate(self, request: Request, chat: bool):
        body = await self._body(request)
        parsed = parse(body, chat)
        self._check_model(body["model"])
        req = await asyncio.to_thread(self._request, parsed)
        cancel = threading.Event()
        queue = self.scheduler.submit(req, cancel, conversation(request, body))
        responses = Responses(self.model_id, chat)
        if parsed.stream:
            return StreamingResponse(self._sse(queue, cancel, responses, parsed), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await self._whole(request, queue, cancel, responses, req, chat)

    def _request(self, parsed: Parsed):
        """The runtime request (tokenized, validated by the runtime); ApiError 400 for what it refuses."""
        model = self.model
        try:
            if parsed.messages is not None:
                ids, thinking = model._encode_chat(parsed.messages)
                req = model.request(ids, **parsed.kwargs, split_reasoning=True, thinking=thinking,
                                    speculate=self.speculate)
            else:
                req = model.request(model.tokenizer.encode(parsed.prompt), **parsed.kwargs, speculate=self.speculate)
        except EdgeLMError as exc:
            raise _api_error(exc) from None
        limit = model.decoder.context_length
        if len(req.prompt_ids) >= limit:
            raise ApiError(400, f"the prompt has {len(req.prompt_ids)} tokens; this model's context holds {limit} "
                           "(prompt and answer together): shorten the conversation", "messages",
                           "context_length_exceeded")
        return req

    async def _whole(self, request: Request, queue, cancel, responses: Responses, req, chat: bool) -> JSONResponse:
        content, reasoning, ids, last = [], [], [], None
        checked = time.monotonic()
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), DISCONNECT_POLL)
            except asyncio.TimeoutError:
                item = None
            if time.monotonic() - checked >= DISCONNECT_POLL:  # however fast events come
                checked = time.monotonic()
                if await request.is_disconnected():  # the client left: stop its generation, answer no one
                    cancel.set()
            if item is None:
                continue
            if item is END:
                break
            if isinstance(item, Exception):
                raise _api_error(item)
            content.append(item.content)
            reasoning.append(item.reasoning)
            ids += item.token_ids
            last = item
        if last is None or last.usage is None:
            raise ApiError(503, "the generation ended without a result (the server is stopping)", code="cancelled")
        split = chat and req.split_reasoning
        result = Completion("".join(content), ids, last.usage.prompt_tokens, last.finish_reason,
                            "".join(reasoning) if split else None, last.usage.cached_tokens)
        return JSONResponse(responses.whole(result))

    async def _sse(self, queue, cancel, responses: Responses, parsed: Parsed):
        def data(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        final = None
        try:
            if responses.chat:
                yield data(responses.chunk(first=True))
            while (item := await queue.get()) is not END:
                if isinstance(item, Exception):  # the stream has started (200): the error goes in the stream
                    yield data(_api_error(item).body())
                    break
                if item.content or item.reasoning:
                    yield data(responses.chunk(item.content, item.reasoning))
                if item.finish_reason:
                    final = item
            if final is not None:
                yield data(responses.chunk(finish=final.finish_reason))
                if parsed.include_usage:
                    yield data(responses.usage_chunk(final.usage or Usage(0, 0)))
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()  # a client that disconnects mid-stream ends here (Starlette cancels this generator)

    # -- helpers -------------------------------------------------------------------------------
    async def _body(self, request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise ApiError(413, f"the request body has {declared} bytes; the limit is {self.max_body} (--max-body)",
                           code="body_too_large")
        size, chunks = 0, []
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise ApiError(413, f"the request body is over the limit of {self.max_body} bytes (--max-body)",
                               code="body_too_large")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "the request body nests deeper than Python's JSON reader follows; flatten it",
                           code="invalid_json") from None
        return body

    def _check_model(self, name) -> None:
        if name != self.model_id:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.model_id}' "
                           "(GET /v1/models)", "model", "model_not_found")


CONVERSATION_HEADER = "x-edgelm-conversation"


def conversation(request: Request, body: dict) -> tuple[str, str]:
    """Whose KV cache a request may reuse: the body's `user` field (OpenAI's end-user id), else the
    X-Edgelm-Conversation header (the chat page sends one per tab), else the client's address. A request
    reuses the cache only when its key is the one of the request that left it (edgelm.serve.scheduler), so a
    client cannot learn another conversation's prompt from `cached_tokens`."""
    user = body.get("user")
    if isinstance(user, str) and user:
        return ("user", user)
    header = request.headers.get(CONVERSATION_HEADER)
    if header:
        return ("header", header)
    return ("client", request.client.host if request.client else "")


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, EdgeLMError):  # the runtime's validators name the argument first
        first = str(exc).split(" ", 1)[0]
        return ApiError(400, str(exc), PARAMS.get(first), "invalid_value")
    return ApiError(500, f"generation failed: {type(exc).__name__}: {exc}"[:500], code="internal_error")


async def _api_error_response(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error_response(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)


def create_app(model, model_id: str, max_queue: int = MAX_QUEUE, max_body: int = MAX_BODY,
               speculate=None, access: Access = Access()) -> Starlette:
    """The app serving `model` (a loaded edgelm.runtime.Model) as `model_id`; `speculate`: speculative decoding
    for every request (Model.chat's option: "prompt-lookup" or a draft Model); `access`: who may drive it
    (edgelm.serve.guard: hosts, origins, API key)."""
    server = Server(model, model_id, max_queue, max_body, speculate)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(server.scheduler.close)

    routes = [
        Route("/", server.index),
        Route("/health", server.health),
        Route("/v1/models", server.models),
        Route("/v1/models/{model:path}", server.one_model),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, access=access)],
                    exception_handlers={ApiError: _api_error_response, HTTPException: _http_error_response})
    app.state.server = server
    return app
