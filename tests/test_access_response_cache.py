"""The response cache's entries: the in-process LRU (bytes bound, expiry, use order), the
entry size limit, a failing store as a miss that rests, and the rules of who is cached."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from lib.access import NamedKey, Policy
from lib.access.cache_rules import cache_rule
from lib.access.response_cache import MemoryCache, ResponseCache
from lib.errors import LimitStoreError
from tests.conftest import Clock


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def test_the_lru_drops_the_least_recently_used_entries_beyond_its_bytes() -> None:
    store = MemoryCache(max_bytes=30)

    async def scenario() -> list[bytes | None]:
        await store.cache_put("a", b"x" * 10, 60)
        await store.cache_put("b", b"y" * 10, 60)
        await store.cache_put("c", b"z" * 10, 60)
        await store.cache_get(["a"])  # a is now the most recently used
        await store.cache_put("d", b"w" * 10, 60)  # drops b, the oldest unused
        return await store.cache_get(["a", "b", "c", "d"])

    assert run(scenario()) == [b"x" * 10, None, b"z" * 10, b"w" * 10]
    assert store.size_bytes == 30


def test_an_lru_entry_expires_after_its_ttl_and_a_value_above_the_bound_is_not_kept() -> None:
    clock = Clock(100.0)
    store = MemoryCache(max_bytes=100, clock=clock)

    async def scenario() -> tuple[list[bytes | None], list[bytes | None]]:
        await store.cache_put("a", b"x", 10)
        await store.cache_put("huge", b"y" * 101, 10)
        alive = await store.cache_get(["a", "huge"])
        clock.now = 110.0
        return alive, await store.cache_get(["a"])

    alive, expired = run(scenario())
    assert alive == [b"x", None] and expired == [None]
    assert store.size_bytes == 0


def test_an_answer_larger_than_an_entry_may_be_is_not_kept() -> None:
    cache = ResponseCache(MemoryCache(1 << 20), max_entry_bytes=1024)

    async def scenario() -> tuple[bool, bool, object]:
        small = await cache.put("s", {"text": "ok"}, 60)
        large = await cache.put("l", {"text": "x" * 2000}, 60)
        return small, large, await cache.get_many(["s", "l"])

    small, large, found = run(scenario())
    assert small is True and large is False
    assert found[0].body == {"text": "ok"} and found[1] is None  # type: ignore[index]


def test_a_hit_says_how_long_ago_the_answer_was_kept() -> None:
    clock = Clock(1000.0)
    cache = ResponseCache(MemoryCache(1 << 20), max_entry_bytes=1024, clock=clock)

    async def scenario() -> int:
        await cache.put("k", {"a": 1}, 60)
        clock.now = 1042.5
        hit = await cache.get("k")
        assert hit is not None
        return hit.age_s

    assert run(scenario()) == 42


class FailingStore:
    kind = "redis"

    def __init__(self) -> None:
        self.calls = 0

    async def cache_get(self, keys: list[str]) -> list[bytes | None]:
        self.calls += 1
        raise LimitStoreError("The limit store is unreachable (did not answer in time).")

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        self.calls += 1
        raise LimitStoreError("The limit store is unreachable (did not answer in time).")


def test_a_failing_store_is_a_miss_logged_once_and_then_rests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore()
    cache = ResponseCache(store, max_entry_bytes=1024)

    async def scenario() -> list[object]:
        found = [await cache.get("k") for _ in range(3)]
        kept = await cache.put("k", {"a": 1}, 60)
        return [*found, kept]

    with caplog.at_level(logging.WARNING, logger="promptgate"):
        assert run(scenario()) == [None, None, None, False]
    assert store.calls == 1  # resting after the first failure: no further waits
    assert sum("cache_store_failed" in r.getMessage() for r in caplog.records) == 1


def test_an_unreadable_entry_is_a_miss() -> None:
    store = MemoryCache(1 << 20)
    cache = ResponseCache(store, max_entry_bytes=1024)

    async def scenario() -> object:
        await store.cache_put("k", b"not json", 60)
        return await cache.get("k")

    assert run(scenario()) is None


KEY = NamedKey("app", b"\0" * 32, Policy(cache_ttl_s=300))


def test_a_key_s_entries_live_under_its_hash_tag_and_the_deployment_s_under_their_own() -> None:
    own = cache_rule(KEY, None, default_ttl_s=0, prefix="pg:")
    shared_key = NamedKey("b", b"", Policy(cache_ttl_s=60, cache_scope="deployment"))
    shared = cache_rule(shared_key, None, default_ttl_s=0, prefix="pg:")
    assert own is not None and own.namespace == "pg:{app}:cache:" and own.ttl_s == 300
    assert shared is not None and shared.namespace == "pg:{~cache}:cache:"


def test_the_deployment_s_ttl_applies_where_a_policy_sets_none_and_zero_turns_it_off() -> None:
    plain = NamedKey("plain", b"", Policy())
    off = NamedKey("off", b"", Policy(cache_ttl_s=0))
    assert cache_rule(plain, None, default_ttl_s=0, prefix="") is None
    rule = cache_rule(plain, None, default_ttl_s=120, prefix="")
    assert rule is not None and rule.ttl_s == 120 and rule.nondeterministic is False
    assert cache_rule(off, None, default_ttl_s=120, prefix="") is None


def test_a_token_s_scope_can_forbid_the_cache_and_a_users_policy_can_set_its_own() -> None:
    forbidden = NamedKey("app:user:1", b"", Policy(cache_forbidden=True), user="u")
    assert cache_rule(KEY, forbidden, default_ttl_s=0, prefix="") is None
    plain_user = NamedKey("app:user:2", b"", Policy(), user="v")
    rule = cache_rule(KEY, plain_user, default_ttl_s=0, prefix="")
    assert rule is not None and rule.ttl_s == 300  # the key's
    own = NamedKey("oidc:users:user:3", b"", Policy(cache_ttl_s=5), user="w")
    rule = cache_rule(KEY, own, default_ttl_s=0, prefix="")
    assert rule is not None and rule.ttl_s == 5
