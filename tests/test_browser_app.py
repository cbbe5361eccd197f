"""examples/browser-app in a real browser: Debian's Chromium, driven by Playwright.

The proxy (tokens on, one allowed origin), the stand-in upstream and the example's backend
each serve on their own loopback port, so the page's calls to the proxy cross origins:
preflight, CORS headers and streaming are the browser's own. A second copy of the app on a
third port, an origin the proxy does not allow, is refused by the browser.

Without Chromium these tests skip, loudly; with CI=true they fail instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from lib.app import create_app
from lib.standin import StandinState, create_standin_app
from tests.browser import LOOPBACK_HOSTS
from tests.conftest import CANARY_KEY, CANARY_TOKEN, CANARY_TOKEN_SECRET, Clock, make_settings
from tests.servers import serve_on_loopback

REPO = Path(__file__).resolve().parents[1]
ANSWER = "Hello from the stand-in upstream! You said: Say hello."  # the page's prompt
SECRET = CANARY_TOKEN_SECRET
USER_RPM = 2


def _load_backend() -> ModuleType:
    path = REPO / "examples" / "browser-app" / "backend.py"
    spec = importlib.util.spec_from_file_location("browser_app_backend", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@dataclass
class Deployment:
    proxy_url: str
    app_url: str
    foreign_app_url: str
    clock: Clock


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    backend = _load_backend()
    clock = Clock()
    state = StandinState(token=CANARY_TOKEN, token_delay_s=0.08)
    keys_toml = (
        "[keys.browser-app]\n"
        f'sha256 = "{hashlib.sha256(CANARY_KEY.encode()).hexdigest()}"\n'
        "rpm = 100\n"
    )
    with serve_on_loopback(create_standin_app(state)) as standin_url:
        # The app's origin must be known before the proxy starts, and the proxy's URL before
        # the app is built: the app's servers start first and serve it once it exists.
        app_holder: dict[str, Any] = {}

        async def app_asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":  # nothing to start or stop
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await app_holder["app"](scope, receive, send)

        with serve_on_loopback(app_asgi) as app_url, serve_on_loopback(app_asgi) as foreign_url:
            settings = make_settings(
                hf_base_url=standin_url,
                token_secret=SECRET,
                keys_toml=keys_toml,
                cors_origins=app_url,
            )
            with serve_on_loopback(create_app(settings, clock=clock)) as proxy_url:
                config = backend.BackendConfig(
                    proxy_url=proxy_url, client_key=CANARY_KEY, rpm=USER_RPM
                )
                app_holder["app"] = backend.create_app(config)
                yield Deployment(proxy_url, app_url, foreign_url, clock)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page whose requests are watched, not intercepted: Playwright answers the CORS
    preflight of an intercepted request itself, and the proxy's own must be the one tested.
    Any request beyond loopback fails the test."""
    context = browser.new_context()
    beyond: list[str] = []
    context.on(
        "request",
        lambda request: (
            None if urlsplit(request.url).hostname in LOOPBACK_HOSTS else beyond.append(request.url)
        ),
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert beyond == []


def _sign_in(page: Any, url: str, name: str) -> None:
    page.goto(url)
    page.fill("#name", name)
    page.click("#sign-in")
    page.wait_for_selector("#ask:not([hidden])")


def _record_answer_growth(page: Any) -> None:
    """Keep every length the answer passes through, to see it arrive in pieces."""
    page.evaluate(
        """() => {
            window.answerLengths = [];
            const answer = document.getElementById("answer");
            new MutationObserver(() => window.answerLengths.push(answer.textContent.length))
                .observe(answer, {childList: true, characterData: true, subtree: true});
        }"""
    )


def test_answer_streams_into_the_page_across_origins(
    page: Any, deployment: Deployment, log_lines: list[str]
) -> None:
    _sign_in(page, deployment.app_url, "ann")
    _record_answer_growth(page)
    page.click("#send")
    page.wait_for_function(
        "text => document.getElementById('answer').textContent === text", arg=ANSWER
    )
    lengths = page.evaluate("window.answerLengths")
    assert len({n for n in lengths if 0 < n < len(ANSWER)}) >= 2, lengths  # it streamed
    assert page.is_hidden("#message")
    calls = [json.loads(line) for line in log_lines]
    calls = [(c["method"], c["status"]) for c in calls if c["route"] != "/v1/tokens"]
    assert calls == [("OPTIONS", 200), ("POST", 200)]  # the browser's preflight, then the call


def test_a_page_from_another_origin_is_refused_by_the_browser(
    page: Any, deployment: Deployment
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    _sign_in(page, deployment.foreign_app_url, "eve")  # its own backend still mints
    page.click("#send")
    page.wait_for_selector("#message:not([hidden])")
    assert any("blocked by CORS policy" in line for line in console), console
    assert page.text_content("#message").startswith("Could not reach the proxy")
    assert page.text_content("#answer") == ""


def test_after_the_token_expires_the_page_says_to_sign_in_again(
    page: Any, deployment: Deployment
) -> None:
    _sign_in(page, deployment.app_url, "cat")
    page.click("#send")
    page.wait_for_function(
        "text => document.getElementById('answer').textContent === text", arg=ANSWER
    )
    deployment.clock.offset += 600 + 60  # the token's 600 s, and the leeway
    try:
        page.click("#send")
        page.wait_for_selector("#message:not([hidden])")
        assert (
            page.text_content("#message") == "Your session has expired. Sign in again to continue."
        )
        assert page.is_visible("#login") and page.is_hidden("#ask")
    finally:
        deployment.clock.offset = 0


def test_over_the_users_limit_the_page_shows_the_429_message(
    page: Any, deployment: Deployment
) -> None:
    # Within one minute window however long the browser takes (a window turning over
    # between the clicks would admit the last one).
    deployment.clock.now = time.time() // 60 * 60 + 30 - deployment.clock.offset
    try:
        _sign_in(page, deployment.app_url, "ben")
        for _ in range(USER_RPM):
            page.click("#send")
            page.wait_for_function(
                "text => document.getElementById('answer').textContent === text", arg=ANSWER
            )
        page.click("#send")
        page.wait_for_selector("#message:not([hidden])")
    finally:
        deployment.clock.now = None
    message = page.text_content("#message")
    assert message.startswith(f"Rate limit reached for user 'ben': {USER_RPM} requests per minute.")
    assert "Try again in" in message
