"""The fallback breaker: N failures in a row open a model for the cooldown, on both stores;
instances on one Redis share it; a store that fails or hangs costs at most its bound and
leaves every model closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lib.access import Breaker
from lib.access.redis_store import RedisStore
from tests.conftest import Clock
from tests.redis_server import RedisServer, run_redis_cluster, run_redis_server

A, B = "org/model-a", "org/model-b"
T0 = 1_800_000_000.0
BOUND_S = 0.5


def breaker(store_url: str | None, clock: Clock, prefix: str = "promptgate:") -> Breaker:
    store = None if store_url is None else RedisStore(store_url, timeout_s=BOUND_S)
    return Breaker(store, failures=3, cooldown_s=30, key_prefix=prefix, clock=clock)


def test_three_failures_in_a_row_open_a_model_for_the_cooldown(store_url: str | None) -> None:
    clock = Clock(T0)
    gate = breaker(store_url, clock)

    async def scenario() -> None:
        for _ in range(2):
            await gate.failed(A)
        reading = await gate.read([A, B])
        assert reading.open == frozenset() and reading.failing == {A}
        await gate.failed(A)
        assert (await gate.read([A, B])).open == {A}
        clock.now = T0 + 29.9
        assert (await gate.read([A, B])).open == {A}
        clock.now = T0 + 30.1
        assert (await gate.read([A, B])).open == frozenset()

    asyncio.run(scenario())


def test_after_the_cooldown_one_failure_reopens_and_one_success_closes(
    store_url: str | None,
) -> None:
    clock = Clock(T0)
    gate = breaker(store_url, clock)

    async def scenario() -> None:
        for _ in range(3):
            await gate.failed(A)
        clock.now = T0 + 31  # half-open: one request may try it
        await gate.failed(A)
        assert (await gate.read([A])).open == {A}
        clock.now = T0 + 62
        await gate.succeeded(A)
        reading = await gate.read([A])
        assert reading.open == frozenset() and reading.failing == frozenset()
        await gate.failed(A)
        assert (await gate.read([A])).open == frozenset()  # counting from zero again

    asyncio.run(scenario())


def test_a_success_between_failures_starts_the_count_again(store_url: str | None) -> None:
    gate = breaker(store_url, Clock(T0))

    async def scenario() -> None:
        await gate.failed(A)
        await gate.failed(A)
        await gate.succeeded(A)
        await gate.failed(A)
        await gate.failed(A)
        assert (await gate.read([A])).open == frozenset()

    asyncio.run(scenario())


def test_two_instances_on_one_redis_share_the_breaker_under_the_key_prefix(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    clock = Clock(T0)
    first = breaker(redis_server.url, clock, prefix="team-a:")
    second = breaker(redis_server.url, clock, prefix="team-a:")
    other_deployment = breaker(redis_server.url, clock, prefix="team-b:")

    async def scenario() -> None:
        await first.failed(A)
        await second.failed(A)
        await first.failed(A)
        assert (await second.read([A, B])).open == {A}
        assert (await other_deployment.read([A, B])).open == frozenset()

    asyncio.run(scenario())
    keys = redis_server.command("KEYS", "*")
    assert "team-a:{~fallbacks}:breaker" in keys
    assert all(line.startswith(("*", "$", "team-a:")) for line in keys.split("\r\n") if line)
    ttl = int(redis_server.command("TTL", "team-a:{~fallbacks}:breaker").strip(":\r\n"))
    assert 0 < ttl <= 86_400  # a model left alone is forgotten


def test_a_hung_store_costs_one_bound_and_leaves_every_model_closed(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    gate = breaker(redis_server.url, Clock(T0))

    async def scenario() -> tuple[float, float]:
        for _ in range(3):
            await gate.failed(A)
        assert (await gate.read([A])).open == {A}
        with redis_server.stopped():
            started = time.monotonic()
            reading = await gate.read([A])
            first = time.monotonic() - started
            assert reading.open == frozenset()
            started = time.monotonic()
            await gate.failed(A)  # the store rests after a failure: not asked again at once
            reading = await gate.read([A])
            again = time.monotonic() - started
            assert reading.open == frozenset()
        return first, again

    first, again = asyncio.run(scenario())
    assert first < BOUND_S + 0.5
    assert again < 0.05


def test_a_dead_store_never_raises() -> None:
    with run_redis_server() as server:
        gate = breaker(server.url, Clock(T0))
        server.kill()

        async def scenario() -> None:
            await gate.failed(A)
            await gate.succeeded(A)
            assert (await gate.read([A])).open == frozenset()

        asyncio.run(scenario())


def test_the_breaker_works_on_a_redis_cluster(tmp_path: Path) -> None:
    with run_redis_cluster(tmp_path) as nodes:
        clock = Clock(T0)

        def on_cluster() -> Breaker:
            store = RedisStore(nodes[0].url, timeout_s=2.0, cluster=True)
            return Breaker(store, failures=3, cooldown_s=30, clock=clock)

        first, second = on_cluster(), on_cluster()

        async def scenario() -> None:
            for gate in (first, second, first):
                await gate.failed(A)
            assert (await second.read([A, B])).open == {A}
            await second.succeeded(A)
            assert (await first.read([A, B])).failing == frozenset()

        asyncio.run(scenario())
