"""`edgelm serve` with the real `openai` client on loopback: answers equal the in-process API's, streams
add up to them, errors are OpenAI-style 4xx bodies after which the server stays healthy, concurrent clients
get their own uninterleaved answers, and a client that leaves frees the model.

Reference: the same package loaded in this process (a second Model), greedy."""

import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from edgelm.runtime import load
from edgelm.serve import Running, create_app

MESSAGES = [{"role": "user", "content": "Tell me about the sea and the sky."}]
GEN = {"max_tokens": 24, "temperature": 0}


@pytest.fixture(scope="module")
def package(builds):
    return builds.package("tiny-llama", "fp32")


@pytest.fixture(scope="module")
def reference(package):
    return load(package)


@pytest.fixture(scope="module")
def server(package):
    model = load(package)
    with Running(create_app(model, "tiny", max_queue=16)) as running:
        running.model = model
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post_raw(url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_healthy(server, client):
    status, body = get(server.url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).choices[0].finish_reason


def stream_text(client, **kw) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(model="tiny", stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    status, body = get(server.url + "/health")
    assert status == 200 and body["queue"]["max_waiting"] == 16


def test_chat_equals_the_in_process_api_whole_and_streamed(client, reference):
    want = reference.chat(MESSAGES, max_new_tokens=24)
    got = client.chat.completions.create(model="tiny", messages=MESSAGES, **GEN)
    assert got.choices[0].message.content == want.text
    assert got.choices[0].finish_reason == {"context_full": "length"}.get(want.finish_reason, want.finish_reason)
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (want.prompt_tokens, len(want.token_ids))
    text, chunks = stream_text(client, messages=MESSAGES, stream_options={"include_usage": True}, **GEN)
    assert text == want.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == got.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(want.token_ids)
    completion = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0)
    assert completion.choices[0].text == reference.complete("Once upon a time", max_new_tokens=12).text


def test_stop_strings(client, reference):
    full = reference.chat(MESSAGES, max_new_tokens=24, ignore_eos=True).text
    stop = full[6:9]
    got = client.chat.completions.create(model="tiny", messages=MESSAGES, stop=[stop, "never in the text"], **GEN)
    assert got.choices[0].message.content == full[: full.find(stop)]
    assert got.choices[0].finish_reason == "stop"
    assert stream_text(client, messages=MESSAGES, stop=stop, **GEN)[0] == full[: full.find(stop)]


def test_reasoning_split(builds):
    """The tiny R1-like model (tests/r1_distill.py) closes its reasoning: reasoning_content and content as
    the in-process API splits them, whole and streamed."""
    _, package = builds.r1()
    want = load(package).chat([{"role": "user", "content": "What is 2 + 3?"}], max_new_tokens=24)
    assert want.reasoning and want.text
    with Running(create_app(load(package), "r1")) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        kw = {"model": "r1", "messages": [{"role": "user", "content": "What is 2 + 3?"}], **GEN}
        got = client.chat.completions.create(**kw).choices[0].message
        assert (got.model_extra["reasoning_content"], got.content) == (want.reasoning, want.text)
        chunks = [c.choices[0].delta for c in client.chat.completions.create(stream=True, **kw) if c.choices]
        assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in chunks) == want.reasoning
        assert "".join(d.content or "" for d in chunks) == want.text


@pytest.mark.parametrize("kw, status, code", [
    ({"model": "gpt-4o"}, 404, "model_not_found"),
    ({"temperature": -1}, 400, "invalid_value"),
    ({"top_p": 2}, 400, "invalid_value"),
    ({"max_tokens": 0}, 400, "invalid_value"),
    ({"frequency_penalty": 0.5}, 400, "unsupported_parameter"),
    ({"n": 3}, 400, "unsupported_parameter"),
    ({"extra_body": {"mirostat": 2}}, 422, "unknown_parameter"),
    ({"extra_body": {"max_tokens": "many"}}, 422, "invalid_type"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "invalid_type"),
    ({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, 400, "unsupported_parameter"),
    ({"stream_options": {"include_usage": True, "continuous_usage_stats": True}}, 400, "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": "word " * 600}]}, 400, "context_length_exceeded"),
    ({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}, 413, "body_too_large"),
])
def test_errors_are_openai_style_and_the_server_stays_healthy(server, client, kw, status, code):
    args = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **kw}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**args)
    assert err.value.status_code == status
    assert err.value.body["code"] == code and err.value.body["message"]
    assert_healthy(server, client)


def test_malformed_bodies_and_unknown_routes(server, client):
    status, body = post_raw(server.url + "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = post_raw(server.url + "/v1/chat/completions", b"[1, 2]")
    assert status == 422 and body["error"]["type"] == "invalid_request_error"
    status, body = get(server.url + "/v1/engines")
    assert status == 404 and "error" in body
    assert_healthy(server, client)


def test_eight_concurrent_streams_each_get_their_own_answer(server, client):
    prompts = [[{"role": "user", "content": f"Story number {i}: the {w}"}]
               for i, w in enumerate(["sea", "sky", "moon", "tree", "road", "city", "cat", "rain"])]
    alone = [stream_text(client, messages=m, **GEN)[0] for m in prompts]
    assert len(set(alone)) > 4  # different prompts, different answers: interleaving would show
    results: dict[int, str] = {}

    def run(i):
        results[i] = stream_text(client, messages=prompts[i], **GEN)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results.get(i) for i in range(8)] == alone


def test_a_full_queue_answers_429(package):
    model = load(package)
    with Running(create_app(model, "tiny", max_queue=1)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        outcomes: list = []

        def run():
            try:
                client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=200,
                                               extra_body={"ignore_eos": True})
                outcomes.append(200)
            except openai.APIStatusError as e:
                outcomes.append((e.status_code, e.body["code"]))

        threads = [threading.Thread(target=run) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert (429, "queue_full") in outcomes and 200 in outcomes and len(outcomes) == 5


def test_a_client_that_disconnects_frees_the_server(server, client):
    model = server.model
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=480, stream=True,
                                            temperature=0, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.monotonic() + 20
    while get(server.url + "/health")[1]["queue"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get(server.url + "/health")[1]["queue"]["running"] == 0
    assert len(model.decoder.tokens) < 300  # stopped well before its 480 tokens
    assert_healthy(server, client)


def test_a_client_that_gives_up_on_a_whole_answer_frees_the_server(package):
    """Non-streamed: the server notices the closed connection while it generates and cancels."""
    model = load(package)
    forward = model.decoder.forward  # 20 ms a token: the client's 1 s timeout comes first
    model.decoder.forward = lambda *args, **kw: (time.sleep(0.02), forward(*args, **kw))[1]
    with Running(create_app(model, "tiny")) as server:
        impatient = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=1.0)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=480,
                                              extra_body={"ignore_eos": True})
        deadline = time.monotonic() + 20
        while get(server.url + "/health")[1]["queue"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(server.url + "/health")[1]["queue"]["running"] == 0
        assert len(model.decoder.tokens) < 300  # 480 tokens would take 10 s


def test_a_stopping_server_answers_503(package):
    with Running(create_app(load(package), "tiny")) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        server.server.config.app.state.server.scheduler.close()
        status, body = get(server.url + "/health")
        assert status == 503 and body["status"] == "stopping"
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
        assert err.value.status_code == 503 and err.value.body["code"] == "shutting_down"
