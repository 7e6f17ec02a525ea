"""The chat page in a real browser: headless Chromium (Debian's `chromium`, installed by `make test`) driven
by Playwright. The page loads, a prompt streams the model's answer into the page (equal to the in-process
API's), the reasoning pane holds a reasoning model's chain of thought, and Stop ends a long answer. A page
served from another origin cannot make the model generate (its simple text/plain POST and its JSON POST are
refused), a DNS-rebinding name is refused, and --allow-origin lets a named origin's page in (issue 27)."""

import json
import os
import shutil
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgelm.runtime import load
from edgelm.serve import Running, create_app
from edgelm.serve.guard import Access

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (make test installs Debian's)")
SCREENSHOT = os.environ.get("EDGELM_SCREENSHOT")  # a path: save the page after the answer (docs/serve-page.png)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # evil.example resolves to this machine, as a DNS-rebinding attacker's name would
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox",
                                                              "--host-resolver-rules=MAP evil.example 127.0.0.1"])
        yield b
        b.close()


def running(server) -> int:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        return json.loads(r.read())["queue"]["running"]


def ask(page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def test_the_page_streams_an_answer_with_its_reasoning(browser, builds):
    _, package = builds.r1()
    question = "What is 2 + 3?"
    want = load(package).chat([{"role": "user", "content": question}])  # the page asks for the package's defaults
    assert want.reasoning and want.text
    with Running(create_app(load(package), "r1-tiny")) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('r1-tiny')")
        ask(page, question)
        page.wait_for_function("document.getElementById('stats').dataset.done === '1'", timeout=60_000)
        assert page.inner_text(".msg.user") == question
        assert page.text_content(".msg.assistant .answer") == want.text
        assert page.text_content(".msg.assistant details.reasoning div") == want.reasoning
        assert "tok/s" in page.inner_text("#stats")
        if SCREENSHOT:
            page.click("details.reasoning summary")
            page.screenshot(path=str(Path(SCREENSHOT)), full_page=False)
        page.close()


def test_stop_ends_a_long_answer_and_the_page_goes_on(browser, builds):
    model = load(builds.package("tiny-llama", "fp32"))
    forward = model.decoder.forward  # 20 ms a token: the answer is still running when the page clicks Stop
    model.decoder.forward = lambda *args, **kw: (time.sleep(0.02), forward(*args, **kw))[1]
    with Running(create_app(model, "tiny")) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('tiny')")
        # a long answer: the page asks for the package's default max_new_tokens, streamed token by token
        page.evaluate("window.fetchOriginal = window.fetch; window.fetch = (u, o) => { if (o && o.body) { "
                      "const b = JSON.parse(o.body); b.max_tokens = 480; b.ignore_eos = true; "
                      "o.body = JSON.stringify(b); } return window.fetchOriginal(u, o); }")
        ask(page, "Tell me a long story.")
        page.wait_for_function("document.querySelector('.msg.assistant .answer').textContent.length > 5")
        page.click("#stop")
        page.wait_for_function("document.getElementById('stats').dataset.done === '1'")
        assert page.is_enabled("#send") and not page.is_enabled("#stop")
        deadline = time.monotonic() + 20
        while running(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(model.decoder.tokens) < 400  # the server stopped generating, well before 480 tokens
        ask(page, "Hello again")  # the conversation goes on
        page.wait_for_function("document.querySelectorAll('.msg.assistant').length === 2 && "
                               "document.getElementById('stats').dataset.done === '1'", timeout=60_000)
        page.close()


# A page of another site: on load it POSTs a chat request to the model server, first as a "simple" request
# (text/plain, no-cors: no preflight, the kind any page may send), then as JSON (preflighted); it records what it saw.
EVIL_PAGE = """<!doctype html><title>another site</title><script>
window.results = {};
async function attack(target) {
  const body = JSON.stringify({model: "tiny", messages: [{role: "user", content: "Hello"}], max_tokens: 4});
  try { await fetch(target, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body});
        window.results.simple = "sent"; } catch (e) { window.results.simple = "error"; }
  try { const r = await fetch(target, {method: "POST", headers: {"Content-Type": "application/json"}, body});
        const j = await r.json(); window.results.json = r.status + ":" + (j.choices ? "answer" : j.error.code); }
  catch (e) { window.results.json = "blocked"; }
  window.results.done = true;
}
attack(new URLSearchParams(location.search).get("target"));
</script>"""


class _EvilHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = EVIL_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_site():
    """Another origin on loopback (another port) serving EVIL_PAGE."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EvilHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _counted(model) -> list:
    runs, run = [], model.run
    model.run = lambda *a, **k: (runs.append(1), run(*a, **k))[1]
    return runs


def _attack(browser, page_origin: str, target: str) -> dict:
    page = browser.new_page()
    page.goto(f"{page_origin}/?target={target}/v1/chat/completions")
    page.wait_for_function("window.results && window.results.done === true", timeout=60_000)
    results = page.evaluate("window.results")
    page.close()
    return results


def test_a_page_from_another_origin_cannot_make_the_model_generate(browser, builds, other_site):
    """Planted once: without the guard the simple request generated (runs 1) and so did the JSON one."""
    model = load(builds.package("tiny-llama", "fp32"))
    runs = _counted(model)
    with Running(create_app(model, "tiny")) as server:
        results = _attack(browser, other_site, server.url)
        assert results["json"] == "blocked"  # the preflight got 403: the browser never sent the POST
        assert runs == []  # and the simple request was refused before the model ran
        port = server.url.rsplit(":", 1)[1]
        page = browser.new_page()  # DNS rebinding: the server reached under the attacker's name
        response = page.goto(f"http://evil.example:{port}/")
        assert response.status == 403 and "host_not_allowed" in page.content()
        page.close()
        assert runs == []
    allowed = Access(allow_origins=(other_site,))
    with Running(create_app(model, "tiny", access=allowed)) as server:  # a named origin's page works
        results = _attack(browser, other_site, server.url)
        assert results["json"] == "200:answer" and len(runs) == 1  # the JSON one; the text/plain one: 415
