"""The pages in a real browser: Debian's Chromium, driven by Playwright, against the app
under uvicorn and the stand-in upstream, both on loopback. Every request the browser makes
to any other address is blocked and counted; each test ends by checking the count is zero.

Without Chromium (/usr/bin/chromium, or $CHROMIUM_PATH) these tests skip, loudly; with
CI=true they fail instead.
`make screenshots` runs them with SCREENSHOT_DIR=docs to refresh the README's pictures.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lib.app import create_app
from lib.routes.pages import CONTENT_SECURITY_POLICY, REDOC_CONTENT_SECURITY_POLICY
from lib.standin import StandinState, create_standin_app
from tests.browser import (
    DESKTOP,
    PHONE,
    Watch,
    assert_clean,
    open_page,
    save_screenshot,
)
from tests.conftest import CANARY_KEY, CANARY_TOKEN, CANARY_TOKEN_SECRET, make_settings
from tests.servers import serve_on_loopback

STANDIN_ANSWER = "Hello from the stand-in upstream!"
MODEL = "HuggingFaceTB/SmolLM3-3B"
REQUEST_TIMEOUT_S = 3.0


@dataclass
class Live:
    """The proxy and the stand-in serving on loopback."""

    url: str
    standin: StandinState


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN, token_delay_s=0.05, slow_s=REQUEST_TIMEOUT_S + 1.5)
    with serve_on_loopback(create_standin_app(state)) as standin_url:
        settings = make_settings(
            hf_base_url=standin_url,
            request_timeout_s=REQUEST_TIMEOUT_S,
            token_secret=CANARY_TOKEN_SECRET,  # the playground can trade its key for a token
        )
        with serve_on_loopback(create_app(settings)) as url:
            yield Live(url=url, standin=state)


@pytest.fixture
def page(browser: Any, watch: Watch) -> Iterator[Any]:
    page = open_page(browser, DESKTOP, watch)
    yield page
    page.context.close()


# ---- /docs and /redoc ------------------------------------------------------------------------


def _operation(page: Any, path: str) -> Any:
    return page.locator(".opblock", has=page.locator(f".opblock-summary-path[data-path='{path}']"))


def _try_it_out(page: Any, path: str) -> str:
    operation = _operation(page, path)
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    body = operation.locator(".live-responses-table .response-col_description pre").first
    body.wait_for()
    return body.inner_text()


def test_docs_try_it_out_reaches_the_standin_through_the_proxy(
    live: Live, page: Any, watch: Watch, tmp_path: Path
) -> None:
    response = page.goto(f"{live.url}/docs")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page.locator(".opblock").first.wait_for()
    paths = page.locator(".opblock-summary-path").evaluate_all(
        "nodes => nodes.map(n => n.dataset.path)"
    )
    assert set(paths) >= {"/v1/chat/completions", "/api/generate", "/v1/models", "/api/health"}
    save_screenshot(page, "screenshot-docs.png", tmp_path)

    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    # The client key's scheme; the dialog also offers the admin key's (GET /api/usage).
    client_key = dialog.locator("form", has_text="HTTPBearer")
    client_key.get_by_label("auth-bearer-value").fill(CANARY_KEY)
    client_key.get_by_role("button", name="Apply credentials").click()
    client_key.get_by_role(
        "button", name="Remove authorization"
    ).wait_for()  # Swagger UI accepted the key
    dialog.get_by_role("button", name="Close").first.click()
    received_before = len(live.standin.received)

    chat = _try_it_out(page, "/v1/chat/completions")
    assert STANDIN_ANSWER in chat and '"chat.completion"' in chat
    generate = _try_it_out(page, "/api/generate")
    assert f"{STANDIN_ANSWER} You said: Write a haiku about proxies." in generate

    sent = live.standin.received[received_before:]
    assert [r["path"] for r in sent] == ["/v1/chat/completions", "/v1/chat/completions"]
    # The proxy swapped the client key typed into Authorize for the server's token.
    assert all(r["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}" for r in sent)
    assert_clean(watch)


def test_docs_without_authorize_shows_the_401_error_shape(live: Live, page: Any) -> None:
    page.goto(f"{live.url}/docs")
    page.locator(".opblock").first.wait_for()
    body = _try_it_out(page, "/v1/models")
    assert '"authentication_error"' in body and "Missing API key" in body


def test_redoc_renders_the_operations_from_this_origin(live: Live, page: Any, watch: Watch) -> None:
    response = page.goto(f"{live.url}/redoc")
    assert response.headers["content-security-policy"] == REDOC_CONTENT_SECURITY_POLICY
    page.get_by_role("heading", name="Create a chat completion").wait_for()
    text = page.locator("body").inner_text()
    assert "Generate text from a prompt" in text and "List the allowed models" in text
    assert_clean(watch)


# ---- the playground at / -----------------------------------------------------------------------


def _enter_key(page: Any, key: str) -> None:
    page.get_by_label("Client key").fill(key)
    page.get_by_label("Client key").press("Enter")


def _start_sampling(page: Any) -> None:
    """Record the answer's length at every animation frame, to see it grow."""
    page.evaluate(
        """() => {
            window.lengths = [];
            const answer = document.getElementById("answer");
            const tick = () => {
                window.lengths.push(answer.textContent.length);
                requestAnimationFrame(tick);
            };
            requestAnimationFrame(tick);
        }"""
    )


def test_playground_streams_an_answer_token_by_token(
    live: Live, page: Any, watch: Watch, tmp_path: Path
) -> None:
    response = page.goto(f"{live.url}/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    _enter_key(page, CANARY_KEY)
    model = page.get_by_label("Model", exact=True)
    page.wait_for_function("() => document.getElementById('model').options[0]?.value !== ''")
    assert model.input_value() == MODEL and model.is_enabled()
    offered = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert offered == [MODEL]  # the embedding model is allowed too, but cannot answer a prompt

    _start_sampling(page)
    prompt = "Tell me about streaming proxies"
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Prompt").press("Enter")
    status = page.get_by_role("status")
    status.filter(has_text="Done").wait_for()

    expected = f"{STANDIN_ANSWER} You said: {prompt}"
    assert page.locator("#answer").inner_text() == expected
    assert "finish: stop" in status.inner_text()
    assert f"{len(expected.split())} tokens" in status.inner_text()
    lengths = page.evaluate("window.lengths")
    partial = sorted({n for n in lengths if 0 < n < len(expected)})
    assert len(partial) >= 4, f"the answer did not grow over several frames: {partial}"
    sent = live.standin.received[-1]["json"]
    assert sent["model"] == MODEL and sent["stream"] is True
    assert sent["messages"][-1] == {"role": "user", "content": prompt}
    save_screenshot(page, "screenshot-playground.png", tmp_path)

    # The key stays in this tab's sessionStorage, and nowhere in the page or localStorage.
    assert page.evaluate("sessionStorage.getItem('promptgate.clientKey')") == CANARY_KEY
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    assert page.get_by_label("Client key").input_value() == CANARY_KEY
    assert CANARY_KEY not in page.content().replace(f'value="{CANARY_KEY}"', "")
    assert_clean(watch)


def test_playground_trades_the_key_for_a_token_and_keeps_only_the_token(
    live: Live, page: Any, watch: Watch
) -> None:
    page.goto(f"{live.url}/")
    _enter_key(page, CANARY_KEY)
    page.wait_for_function("() => document.getElementById('model').options[0]?.value !== ''")
    page.get_by_role("button", name="Trade the key for a short-lived token").click()
    page.get_by_role("status").filter(has_text="Using a short-lived token").wait_for()
    stored = page.evaluate("() => JSON.stringify(Object.entries(sessionStorage))")
    assert CANARY_KEY not in stored and "eyJ" in stored
    assert page.locator("#key").input_value().startswith("eyJ")
    assert "valid until" in page.locator("#token-hint").inner_text()

    page.get_by_label("Prompt").fill("Hello with a token")
    page.get_by_label("Prompt").press("Enter")
    page.get_by_role("status").filter(has_text="Done").wait_for()
    assert page.locator("#answer").inner_text().endswith("You said: Hello with a token")
    page.get_by_role("button", name="Trade the key for a short-lived token").click()
    page.locator("#error").filter(has_text="Tokens cannot mint tokens").wait_for()
    assert_clean(watch)


def test_playground_stop_ends_a_running_answer(live: Live, page: Any, watch: Watch) -> None:
    live.standin.token_delay_s = 0.15
    prompt = "one two three four five six"
    whole_answer = f"{STANDIN_ANSWER} You said: {prompt}"
    try:
        page.goto(f"{live.url}/")
        _enter_key(page, CANARY_KEY)
        page.get_by_label("Prompt").fill(prompt)
        page.get_by_role("button", name="Send").click()
        page.wait_for_function("() => document.getElementById('answer').textContent.length > 0")
        stop = page.get_by_role("button", name="Stop")
        assert stop.is_enabled()
        stop.click()
        page.get_by_role("status").filter(has_text="Stopped.").wait_for()
        stopped_at = page.locator("#answer").inner_text()
        time.sleep(0.6)  # four token delays: nothing more may arrive
        assert page.locator("#answer").inner_text() == stopped_at
        assert whole_answer.startswith(stopped_at) and len(stopped_at) < len(whole_answer)
        assert page.get_by_role("button", name="Send").is_enabled() and not stop.is_enabled()
        assert page.locator("#error").is_hidden()
    finally:
        live.standin.token_delay_s = 0.05
    assert_clean(watch)


def test_playground_explains_a_wrong_key(live: Live, page: Any, watch: Watch) -> None:
    page.goto(f"{live.url}/")
    _enter_key(page, "pg_wrong_key_0000")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "refused this client key" in alert.inner_text()
    received_before = len(live.standin.received)
    page.get_by_label("Prompt").fill("hello")
    page.get_by_label("Prompt").press("Control+Enter")
    page.get_by_role("status").filter(has_text="HTTP 401").wait_for()
    assert "refused this client key" in alert.inner_text()
    assert "{" not in alert.inner_text()
    assert re.search(r"\(request id [0-9a-f]{32}\)$", alert.inner_text())
    assert len(live.standin.received) == received_before
    assert_clean(watch)


@pytest.mark.parametrize(
    ("fault", "message", "status"),
    [
        ("#standin:429", "Rate limited", "HTTP 429"),
        ("#standin:slow", "Timed out", "HTTP 504"),
        ("#standin:midError", "CUDA out of memory", "Broken off by an error"),
    ],
)
def test_playground_explains_upstream_failures(
    live: Live, page: Any, watch: Watch, fault: str, message: str, status: str
) -> None:
    page.goto(f"{live.url}/")
    _enter_key(page, CANARY_KEY)
    page.get_by_label("Prompt").fill(f"hello {fault}")
    page.get_by_role("button", name="Send").click()
    page.get_by_role("status").filter(has_text=status).wait_for()
    alert = page.get_by_role("alert").inner_text()
    assert message in alert and "{" not in alert
    if fault == "#standin:429":
        assert "Try again in 7 s" in alert  # the stand-in's Retry-After, passed on
    assert_clean(watch)


def test_playground_at_phone_width(live: Live, browser: Any, tmp_path: Path) -> None:
    watch = Watch()
    page = open_page(browser, PHONE, watch)
    try:
        page.goto(f"{live.url}/")
        _enter_key(page, CANARY_KEY)
        page.get_by_label("Prompt").fill("Hello from a phone")
        page.get_by_label("Prompt").press("Enter")
        page.get_by_role("status").filter(has_text="Done").wait_for()
        # Nothing wider than the screen: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        for name in ("Send", "Stop"):
            box = page.get_by_role("button", name=name).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
            assert box["height"] >= 40  # big enough to tap
        save_screenshot(page, "screenshot-playground-phone.png", tmp_path)
    finally:
        page.context.close()
    assert_clean(watch)


def test_playground_is_usable_from_the_keyboard(live: Live, page: Any, watch: Watch) -> None:
    page.goto(f"{live.url}/")
    page.keyboard.press("Tab")  # API docs link
    page.keyboard.press("Tab")  # Reference link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key"
    page.keyboard.type(CANARY_KEY)
    page.keyboard.press("Enter")
    page.wait_for_function("() => !document.getElementById('model').disabled")
    focus_ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focus_ring == "solid"
    for _ in range(4):  # Load models, Trade the key for a token, Model, Prompt
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "prompt"
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.get_by_label("Prompt").input_value() == "typed without a mouse\nsecond line"
    page.keyboard.press("Control+Enter")
    page.get_by_role("status").filter(has_text="Done").wait_for()
    assert "You said: typed without a mouse second line" in page.locator("#answer").inner_text()
    assert_clean(watch)
