"""Shared fixtures: canary secrets, settings built without the environment, fakes upstream."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from lib.http import LOGGER_NAME
from lib.settings import Settings
from tests.redis_server import RedisServer, run_redis_server
from tests.secret_audit import AUDIT, AuditingLogHandler, audited

# Obviously fake values; tests check that they never leak.
CANARY_TOKEN = "hf_test_canary_token_5f2c9a"
CANARY_KEY = "pg_test_canary_key_7d41e0"
UPSTREAM = "https://upstream.test"
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
# TOKEN_SECRET for tests that mint tokens through the app.
CANARY_TOKEN_SECRET = "pg_test_canary_tokensecret_Q7w2Z9x4R1v8K3m6"
AUDIT.watch(CANARY_TOKEN)
AUDIT.watch(CANARY_KEY)
AUDIT.watch(CANARY_TOKEN_SECRET)


def running_in_ci() -> bool:
    """True under CI (`CI=true` or `CI=1`), where a missing prerequisite is a failure."""
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under CI, every skip is a failure: CI installs every real part the suite drives."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and running_in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI is set, so this skip fails the run: {reason}"


@pytest.fixture(scope="session", autouse=True)
def _no_secret_leaks_anywhere() -> Iterator[None]:
    """Fail the session if any canary showed up in any response or log line of any test."""
    handler = AuditingLogHandler()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    assert not AUDIT.hits, "secrets leaked:\n" + "\n".join(AUDIT.hits[:20])


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Keep the developer's own variables and `.env` out of every test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def sha256_hex(key: str) -> str:
    """A key's SHA-256 as the policy file and `sha256:` entries hold it."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: the canary token and key, a fake upstream host."""
    values: dict[str, Any] = {
        "hf_token": CANARY_TOKEN,
        "proxy_api_keys": CANARY_KEY,
        "hf_base_url": UPSTREAM,
        # One attempt, so error translation is seen directly; tests of retries raise it.
        "upstream_max_attempts": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def upstream() -> respx.Router:
    """A respx router standing in for the Hugging Face router; tests add routes to it."""
    return respx.Router(base_url=UPSTREAM, assert_all_called=False)


def make_client(router: respx.Router, **overrides: Any) -> TestClient:
    """A test client for an app whose upstream calls go to `router`."""
    transport = httpx.MockTransport(router.async_handler)
    app = create_app(make_settings(**overrides), transport=transport)
    return TestClient(audited(app), raise_server_exceptions=False)


@pytest.fixture
def client(upstream: respx.Router) -> Iterator[TestClient]:
    """The app with default test settings, its upstream faked by `upstream`."""
    with make_client(upstream) as test_client:
        yield test_client


class LogCollector(logging.Handler):
    """Keeps every line promptgate logs during a test."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The log lines promptgate writes during the test."""
    collector = LogCollector()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(collector)
    yield collector.lines
    logger.removeHandler(collector)


def chat_completion(content: str = "Hi there!", model: str = "HuggingFaceTB/SmolLM3-3B") -> dict:
    """A chat completion as the router answers one."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def sse(*events: Any) -> bytes:
    """An SSE body: each event a JSON object, or the literal `[DONE]`."""
    import json

    parts = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        parts.append(f"data: {data}\n\n")
    return "".join(parts).encode()


def chunk(content: str | None = None, finish_reason: str | None = None, usage: Any = None) -> dict:
    """One chat.completion.chunk event."""
    delta = {} if content is None else {"content": content}
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": choices,
        "usage": usage,
    }


class Clock:
    """An injected wall clock (unix seconds) the test moves by hand: windows without sleeping.

    Fixed at `start` (set `now` to move it), or, without one, the real clock plus `offset`
    (for tests that also meet real time: servers, browsers, certificates).
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = start
        self.offset = 0.0

    def __call__(self) -> float:
        return (time.time() if self.now is None else self.now) + self.offset


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the module's tests."""
    with run_redis_server() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Each test runs on both stores: None (in-process), or a real Redis, emptied first."""
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium under Playwright for a module's browser tests (tests/browser.py); skips,
    loudly, without it (fails under CI)."""
    from tests.browser import launched_chromium

    yield from launched_chromium()


@pytest.fixture
def watch() -> Iterator[Any]:
    """What a browser test's pages tried beyond loopback: nothing, checked at the end."""
    from tests.browser import Watch

    watch = Watch()
    yield watch
    assert watch.blocked == [], "the page tried to reach beyond loopback"
