"""Who may drive `edgelm serve` (issue 27, items 4-6): foreign Origins and Hosts get 403 before the model runs,
JSON routes take only application/json, --api-key guards /v1 (the openai client with and without it), a body
nested 100,000 deep is a 400, and a conversation's KV cache is reused only by the conversation that made it.

Each test counts the model's generations (Model.run calls) to prove a refused request never reached it. Planted
once each: the Guard middleware removed from create_app (the Origin/Host/type tests fail: 200 and a generation),
the RecursionError branch removed (HTTP 500), the scheduler reusing every cache (cached_tokens 19 for bob)."""

import json
import urllib.error
import urllib.request

import openai
import pytest

from edgelm.runtime import load
from edgelm.serve import Running, create_app
from edgelm.serve.guard import Access, host_name

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def model(builds):
    return load(builds.package("tiny-llama", "fp32"))


class Counted:
    """The model with its generations counted."""

    def __init__(self, model):
        self.model, self.runs = model, 0
        run = model.run

        def counted(*args, **kwargs):
            self.runs += 1
            return run(*args, **kwargs)

        model.run = counted


@pytest.fixture
def counted(model):
    c = Counted(model)
    yield c
    del model.run  # the class's method again


def post(url: str, body, headers: dict) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


JSON = {"Content-Type": "application/json"}


def test_a_cross_site_simple_request_is_refused_before_the_model_runs(model, counted):
    with Running(create_app(model, "tiny")) as server:
        url = server.url + "/v1/chat/completions"
        # what a page at evil.example can send without a preflight: text/plain, its Origin attached
        status, body, _ = post(url, BODY, {"Content-Type": "text/plain", "Origin": "http://evil.example"})
        assert status == 403 and body["error"]["code"] == "origin_not_allowed"
        status, body, _ = post(url, BODY, {**JSON, "Origin": "http://evil.example"})
        assert status == 403
        status, body, _ = post(url, BODY, {**JSON, "Origin": "null"})  # sandboxed iframes, file:// pages
        assert status == 403
        assert counted.runs == 0
        # the server's own page (Origin = its own scheme://host:port), and clients sending no Origin: served
        status, body, _ = post(url, BODY, {**JSON, "Origin": server.url})
        assert status == 200 and body["choices"][0]["message"]["content"] is not None
        status, _, _ = post(url, BODY, JSON)
        assert status == 200 and counted.runs == 2


def test_json_routes_take_only_application_json(model, counted):
    with Running(create_app(model, "tiny")) as server:
        url = server.url + "/v1/chat/completions"
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
            status, body, _ = post(url, BODY, {"Content-Type": kind} if kind else {})
            assert status == 415, kind
            assert body["error"]["code"] == "unsupported_media_type"
        status, _, _ = post(url, BODY, {"Content-Type": "application/json; charset=utf-8"})
        assert status == 200 and counted.runs == 1


def test_a_foreign_host_is_refused_dns_rebinding(model, counted):
    """A page at evil.example whose name was rebound to 127.0.0.1 reaches the server with Host: evil.example;
    its own origin then equals the Host, so only the Host check stands between it and the answers."""
    with Running(create_app(model, "tiny")) as server:
        port = server.url.rsplit(":", 1)[1]
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}", **JSON}
        status, body, _ = post(server.url + "/v1/chat/completions", BODY, rebound)
        assert status == 403 and body["error"]["code"] == "host_not_allowed"
        req = urllib.request.Request(server.url + "/", headers={"Host": f"evil.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 403
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            status, _, _ = post(server.url + "/v1/chat/completions", BODY, {**JSON, "Host": host})
            assert status == 200, host
        assert counted.runs == 3
    with Running(create_app(model, "tiny", access=Access(allow_hosts=("my-box.local",)))) as server:
        status, _, _ = post(server.url + "/v1/chat/completions", BODY, {**JSON, "Host": "my-box.local:1"})
        assert status == 200


def test_an_allowed_origin_gets_cors_and_a_preflight(model, counted):
    app = create_app(model, "tiny", access=Access(allow_origins=("http://localhost:3000",)))
    with Running(app) as server:
        url = server.url + "/v1/chat/completions"
        status, _, headers = post(url, BODY, {**JSON, "Origin": "http://localhost:3000"})
        assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
        req = urllib.request.Request(url, method="OPTIONS", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204 and "POST" in r.headers["access-control-allow-methods"]
        status, _, _ = post(url, BODY, {**JSON, "Origin": "http://localhost:3001"})
        assert status == 403
        assert counted.runs == 1


def test_an_api_key_guards_every_v1_route_but_not_health(model, counted):
    key = "s3cret-key-for-tests"
    with Running(create_app(model, "tiny", access=Access(api_key=key))) as server:
        anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key", max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError):
            anonymous.chat.completions.create(**BODY)
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        assert counted.runs == 0
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)
        assert client.chat.completions.create(**BODY).choices[0].message.content is not None
        assert [m.id for m in client.models.list()] == ["tiny"]
        with urllib.request.urlopen(server.url + "/health", timeout=30) as r:
            assert r.status == 200
        with urllib.request.urlopen(server.url + "/", timeout=30) as r:  # the page, which then asks for the key
            assert r.status == 200 and b"app.js" in r.read()
        assert counted.runs == 1


def test_a_body_nested_100000_deep_is_a_400_not_a_500(model, counted):
    with Running(create_app(model, "tiny", max_body=1 << 20)) as server:
        status, body, _ = post(server.url + "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, JSON)
        assert status == 400 and body["error"]["code"] == "invalid_json"
        status, _, _ = post(server.url + "/v1/chat/completions", BODY, JSON)  # and the server goes on
        assert status == 200


def test_a_conversation_cache_is_reused_only_by_its_own_conversation(model):
    """alice's turn 2 reuses her turn 1's keys/values; bob, sending alice's exact turn-1 prompt (a guess he got
    right), gets cached_tokens 0, as does a conversation header that is not alice's."""
    with Running(create_app(model, "tiny")) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        turn1 = [{"role": "user", "content": "Tell me about the sea and the sky."}]

        def cached(messages, **extra) -> int:
            r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0, **extra)
            return r.usage.prompt_tokens_details.cached_tokens, r.choices[0].message.content

        first, answer = cached(turn1, user="alice")
        assert first == 0
        turn2 = turn1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And the moon?"}]
        assert cached(turn2, user="alice")[0] > 10  # her own cache
        assert cached(turn1, user="bob")[0] == 0  # a right guess of alice's prompt learns nothing
        assert cached(turn1, user="bob")[0] > 10  # bob's own, the second time
        assert cached(turn1, extra_headers={"X-Edgelm-Conversation": "tab-1"})[0] == 0
        assert cached(turn1, extra_headers={"X-Edgelm-Conversation": "tab-2"})[0] == 0
        assert cached(turn1, extra_headers={"X-Edgelm-Conversation": "tab-2"})[0] > 10


@pytest.mark.parametrize("header, name", [("[::1]:8000", "::1"), ("LocalHost:80", "localhost"),
                                          ("evil.example", "evil.example"), ("127.0.0.1", "127.0.0.1")])
def test_host_name(header, name):
    assert host_name(header) == name
