"""Chromium under Playwright for the browser tests: headless and kept off the network (every
request beyond loopback is blocked and counted), with the page problems it reports.

Without Chromium (/usr/bin/chromium, or $CHROMIUM_PATH) the tests skip, loudly; with CI=true
they fail instead (tests/conftest.py). `make screenshots` sets SCREENSHOT_DIR=docs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

# Debian's Chromium by default; CHROMIUM_PATH names another (GitHub's Ubuntu runners have
# Google Chrome at /usr/bin/google-chrome, and Ubuntu's chromium package is only a snap stub).
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
REPO = Path(__file__).resolve().parents[1]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def require_chromium() -> None:
    """Skip (loudly; fail under CI) when Chromium is not installed."""
    if Path(CHROMIUM).exists():
        return
    reason = (
        f"BROWSER TESTS NOT RUN: {CHROMIUM} is missing. Install it with "
        "`apt-get install -y chromium` (.ci/run does this)."
    )
    pytest.skip(reason)  # under CI, conftest turns the skip into a failure


def launched_chromium() -> Iterator[Any]:
    """Chromium under Playwright, headless and kept off the network; skips (fails under CI)
    when it is not installed."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Watch:
    """What the browser tried beyond loopback, and the page problems it reported."""

    blocked: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


def open_page(browser: Any, viewport: dict[str, int], watch: Watch) -> Any:
    """A page in a fresh context at `viewport`: requests beyond loopback blocked into
    `watch.blocked`, CSP violations and page errors noted in `watch`."""
    context = browser.new_context(viewport=viewport)

    def only_loopback(route: Any) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            watch.blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(10_000)

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            watch.csp_violations.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
    return page


def save_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Saves into SCREENSHOT_DIR (relative to the repo) when set, else into the test's tmp dir."""
    folder = os.environ.get("SCREENSHOT_DIR")
    path = (REPO / folder if folder else tmp_path) / name
    page.screenshot(path=str(path), full_page=False)
    return path


def assert_clean(watch: Watch) -> None:
    """Nothing blocked, no CSP violation, no page error."""
    assert watch.blocked == []
    assert watch.csp_violations == []
    assert watch.page_errors == []
