"""The Redis store failing: killed, or hung (SIGSTOP). Each call is bounded; LIMITS_ON_STORE_ERROR
decides between counting in-process (and logging it) and 503. Never a 500, never a hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.access.redis_store import RedisStore
from lib.access.stores import Account, Windows
from lib.app import create_app
from tests.conftest import AUTH, Clock, chat_completion, make_settings
from tests.redis_server import RedisServer, run_redis_server
from tests.secret_audit import audited
from tests.test_access_limits import CHAT, HELLO, T0, policy

PASSWORD = "pg_test_canary_redis_password"
# A store call may take this long (more than the default 0.25 s: a first connection on a loaded
# 2-core machine can take that); a request that waits on one must end far sooner than a hang.
BOUND_S = 1.0
GENEROUS_S = 5.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with run_redis_server(password=PASSWORD) as server:
        yield server


def client_for(
    upstream: respx.Router, server: RedisServer, on_error: str = "local", rpm: int = 2, **settings
) -> TestClient:
    app = create_app(
        make_settings(
            keys_toml=settings.pop("keys_toml", policy(rpm=rpm)),
            redis_url=server.url,
            limits_on_store_error=on_error,
            limits_store_timeout_s=BOUND_S,
            **settings,
        ),
        transport=httpx.MockTransport(upstream.async_handler),
        clock=Clock(T0),
    )
    return TestClient(audited(app), raise_server_exceptions=False)


def test_health_names_the_store_and_whether_it_answers_never_its_url(
    upstream: respx.Router, redis_server: RedisServer
) -> None:
    with client_for(upstream, redis_server) as client:
        health = client.get("/api/health")
        assert health.json()["limits_store"] == "redis"
        assert health.json()["limits_store_reachable"] is True
        redis_server.kill()
        health = client.get("/api/health")
        assert health.status_code == 200
        assert health.json()["limits_store_reachable"] is False
        assert PASSWORD not in health.text and "127.0.0.1" not in health.text


def test_a_wrong_password_is_a_store_failure_not_a_500(
    upstream: respx.Router, redis_server: RedisServer
) -> None:
    redis_server.password = "pg_test_canary_wrong_password"
    upstream.post(CHAT).respond(200, json=chat_completion())
    with client_for(upstream, redis_server, on_error="closed") as client:
        refused = client.post(CHAT, json=HELLO, headers=AUTH)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "limit_store_unavailable"


def test_killed_store_falls_back_to_counting_here_and_logs_it_once(
    upstream: respx.Router, redis_server: RedisServer, log_lines: list[str]
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with client_for(upstream, redis_server) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        redis_server.kill()
        # The in-process store takes over, limits included (it starts from zero).
        statuses = [client.post(CHAT, json=HELLO, headers=AUTH).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
    failures = [line for line in log_lines if "limit_store_failed" in line]
    assert len(failures) == 1
    assert json.loads(failures[0])["action"] == "counting in this process instead"
    assert PASSWORD not in "\n".join(log_lines)


def test_killed_store_with_closed_policy_answers_503_saying_why(
    upstream: respx.Router, redis_server: RedisServer, log_lines: list[str]
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    with client_for(upstream, redis_server, on_error="closed") as client:
        redis_server.kill()
        for _ in range(2):  # the first finds out, the second is refused at once
            refused = client.post(CHAT, json=HELLO, headers=AUTH)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "limit_store_unavailable"
            assert "limit store is unreachable" in refused.json()["error"]["message"]
    assert not route.calls
    assert json.loads(log_lines[-1])["limited_by"] == "limit_store_unavailable"


@pytest.mark.parametrize(("on_error", "status"), [("local", 200), ("closed", 503)])
def test_hung_store_holds_a_request_only_for_its_bound(
    upstream: respx.Router, redis_server: RedisServer, on_error: str, status: int
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with client_for(upstream, redis_server, on_error=on_error, rpm=10) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200  # pool is warm
        with redis_server.stopped():
            started = time.monotonic()
            response = client.post(CHAT, json=HELLO, headers=AUTH)
            elapsed = time.monotonic() - started
            assert response.status_code == status
            assert elapsed < GENEROUS_S
            started = time.monotonic()
            health = client.get("/api/health")
            assert health.json()["limits_store_reachable"] is False
            assert time.monotonic() - started < GENEROUS_S
        # Once it answers again, the shared store counts again (after a short pause). The
        # admission sent while it was frozen may still run when it wakes: 2 or 3 counted.
        time.sleep(2.1)
        response = client.post(CHAT, json=HELLO, headers=AUTH)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining-requests"] in ("7", "8")


def test_the_pool_follows_a_new_event_loop(
    upstream: respx.Router, redis_server: RedisServer
) -> None:
    """A runtime that replaces its loop (each TestClient session has its own) still counts."""
    upstream.post(CHAT).respond(200, json=chat_completion())
    client = client_for(upstream, redis_server, rpm=10)
    for remaining in ("9", "8"):
        with client:  # a new event loop each time
            response = client.post(CHAT, json=HELLO, headers=AUTH)
            assert response.headers["x-ratelimit-remaining-requests"] == remaining


def _ttls(server: RedisServer) -> dict[str, int]:
    """Every key in the store and its TTL in seconds (-1: none)."""
    listed = server.command("KEYS", "*").split("\r\n")
    keys = [line for line in listed[2::2] if line]
    return {key: int(server.command("TTL", key).strip(":\r\n")) for key in keys}


def test_every_window_the_scripts_create_expires_and_keeps_its_expiry(
    upstream: respx.Router, redis_server: RedisServer
) -> None:
    """Admission gives a window its TTL only when it creates it, a settlement only when its
    count starts there: each window still expires, within two of its periods."""
    upstream.post(CHAT).respond(200, json=chat_completion())
    keys_toml = policy(rpm=100, tpm=1_000_000, daily_tokens=1_000_000)
    with client_for(
        upstream, redis_server, keys_toml=keys_toml, global_daily_tokens=10_000_000
    ) as client:
        # The first request creates every window; the later ones find them.
        for _ in range(3):
            assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
            time.sleep(0.2)  # settlements are written in the background
            ttls = _ttls(redis_server)
            assert all(ttl > 0 for ttl in ttls.values()), ttls  # the usage ledger's hour too
            windows = {key: ttl for key, ttl in ttls.items() if "usage" not in key}
            days = [ttl for key, ttl in windows.items() if ":d:" in key]
            minutes = [ttl for key, ttl in windows.items() if ":m:" in key]
            # The key's day and the deployment's; the minute lives two minutes at most.
            assert len(days) == 2 and all(86_400 < ttl <= 2 * 86_400 for ttl in days), ttls
            assert len(minutes) == 1 and 60 < minutes[0] <= 120, ttls
        # A give-back (a failed upstream) settles an existing window: its TTL stays.
        upstream.post(CHAT).respond(502, json={"error": "down"})
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 502
        time.sleep(0.2)
        assert all(ttl > 0 for ttl in _ttls(redis_server).values())


def test_a_settlement_that_recreates_expired_windows_gives_them_their_ttl(
    redis_server: RedisServer,
) -> None:
    """A window that expired between admission and settlement is created again by the
    settlement, and must expire again."""
    windows = Windows(
        accounts=(Account("pg:{a}:m:1", "pg:{a}:d:1"),),
        global_day="pg:{*}:d:1",
        global_daily_tokens=1_000,
        minute_ttl_s=120,
        day_ttl_s=172_800,
        now=time.time(),
    )

    async def settle() -> None:
        store = RedisStore(redis_server.url, timeout_s=BOUND_S)
        await store.add_tokens(windows, 7)
        await store.ping()  # answered after the settlement: it has run
        await store.aclose()

    asyncio.run(settle())
    ttls = _ttls(redis_server)
    assert 60 < ttls["pg:{a}:m:1"] <= 120, ttls
    assert 86_400 < ttls["pg:{a}:d:1"] <= 172_800, ttls
    assert 86_400 < ttls["pg:{*}:d:1"] <= 172_800, ttls
