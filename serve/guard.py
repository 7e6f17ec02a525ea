"""Who may drive the server: an ASGI middleware in front of every route, as local model servers guard
themselves (Ollama's allowed origins, llama.cpp's --api-key).

    Host     the request's Host names this server: a loopback name (localhost, 127.0.0.1, ::1), the address it
             is bound to, any IP address when it is bound to all of them (0.0.0.0 / ::), or a name given with
             --allow-host. Anything else is a DNS-rebinding page (evil.example resolving to 127.0.0.1) and gets
             403: its answers are never sent to that page's origin.
    Origin   absent (curl, SDKs, the openai client), the server's own origin (scheme://Host of the request, the
             Host checked above: the chat page), or one given with --allow-origin (which also gets CORS
             headers, preflight included). Any other origin gets 403 before the body is read: a page the
             user visits cannot make the model generate, simple requests (text/plain, no preflight) included.
    type     POSTs carry Content-Type application/json, else 415 (a form or text/plain body is what a
             cross-site page can send without a preflight).
    key      with --api-key, `Authorization: Bearer KEY` on every /v1 route, else 401. /health and the chat
             page's static files (the same files as in the PyPI package: no model output) stay open; the page
             asks for the key and sends it.

Refusals are OpenAI-style error bodies (edgelm.serve.openai_api.ApiError).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", ""})
KEYED = "/v1"  # the routes an --api-key guards (the API); /health and the page's static files stay open
CORS_HEADERS = "Authorization, Content-Type"


@dataclass(frozen=True)
class Access:
    """The server's access policy (edgelm serve's --allow-origin, --allow-host, --api-key)."""

    allow_origins: tuple[str, ...] = ()  # exact origins ("http://localhost:3000"), or "*" for any
    allow_hosts: tuple[str, ...] = ()  # extra host names the server answers to ("my-box.local"), or "*"
    api_key: str | None = None

    def __post_init__(self):
        for origin in self.allow_origins:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.endswith("/")):
                raise ValueError(f"--allow-origin {origin!r}: give an origin such as http://localhost:3000 "
                                 "(scheme://host[:port], no path), or *")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("--api-key must have at least 8 characters")
        # compared with host_name(Host), which is lower-case
        object.__setattr__(self, "allow_hosts", tuple(h.strip().lower() for h in self.allow_hosts))


def host_name(host: str) -> str:
    """The name part of a Host header value (`[::1]:8000` -> `::1`, `example:80` -> `example`), lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware enforcing `Access` on HTTP requests (see the module docstring)."""

    def __init__(self, app, access: Access = Access()):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message, code, extra = refusal
            return await _send_error(send, status, message, code, extra)
        origin = headers.get("origin")
        cors = self._cors(origin)
        if scope["method"] == "OPTIONS" and cors:  # a preflight from an allowed origin
            return await _send(send, 204, b"", [*cors, (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                                                (b"access-control-allow-headers", CORS_HEADERS.encode()),
                                                (b"access-control-max-age", b"600")])
        if not cors:
            return await self.app(scope, receive, send)

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        return await self.app(scope, receive, send_with_cors)

    def _refusal(self, scope, headers: dict) -> tuple[int, str, str, list] | None:
        """(status, message, code, extra headers) of the first rule the request breaks, or None."""
        a, path = self.access, scope.get("path", "")
        host = headers.get("host", "")
        if not self._host_ok(scope, host_name(host)):
            return (403, f"this server does not answer to the host {host!r}; a page that reaches it under another "
                    "name is refused (edgelm serve --allow-host NAME to allow a name)", "host_not_allowed", [])
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin, scope, host):
            return (403, f"requests from the web origin {origin!r} are refused: only this server's own page may "
                    "use it from a browser (edgelm serve --allow-origin ORIGIN to allow another)",
                    "origin_not_allowed", [])
        if scope["method"] == "OPTIONS":
            return None
        if a.api_key is not None and path.startswith(KEYED):
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), a.api_key.encode()):
                return (401, "this server needs its API key: send Authorization: Bearer KEY", "invalid_api_key",
                        [(b"www-authenticate", b"Bearer")])
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return (415, f"the request's Content-Type is {kind or 'missing'!r}; send the JSON body as "
                        "application/json", "unsupported_media_type", [])
        return None

    def _host_ok(self, scope, name: str) -> bool:
        a = self.access
        if "*" in a.allow_hosts or name in LOOPBACK_NAMES or name in a.allow_hosts:
            return True
        bound = host_name((scope.get("server") or ("", 0))[0] or "")
        return name == bound or (bound in WILDCARD and _is_ip(name))

    def _origin_ok(self, origin: str, scope, host: str) -> bool:
        a = self.access
        if "*" in a.allow_origins or origin in a.allow_origins:
            return True
        scheme = scope.get("scheme", "http")
        return bool(host) and origin.lower() == f"{scheme}://{host}".lower()

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """CORS headers for an origin allowed by --allow-origin (the server's own page needs none)."""
        a = self.access
        if origin is None or not ("*" in a.allow_origins or origin in a.allow_origins):
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


async def _send(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send, status: int, message: str, code: str, extra: list) -> None:
    from edgelm.serve.openai_api import ApiError

    body = json.dumps(ApiError(status, message, code=code).body()).encode()
    await _send(send, status, body, [(b"content-type", b"application/json"), *extra])
