"""The chat page in a real browser: headless Chromium (Debian's `chromium`, installed by `make test`) driven
by Playwright. The page loads, a prompt streams the model's answer into the page (equal to the in-process
API's), the reasoning pane holds a reasoning model's chain of thought, and Stop ends a long answer."""

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from edgelm.runtime import load
from edgelm.serve import Running, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (make test installs Debian's)")
SCREENSHOT = os.environ.get("EDGELM_SCREENSHOT")  # a path: save the page after the answer (docs/serve-page.png)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
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
