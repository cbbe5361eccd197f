"""The ledger and the settlement it carries, on the in-process store: a count held for the
response's end rides in the ledger's write, and one that comes later settles at once."""

from __future__ import annotations

import asyncio

from lib.access import AccessRecord, Caller, Ledger, NamedKey, Policy, UsageEntry
from lib.access.limits import Limiter

T0 = 1_800_000_000.0
KEY = NamedKey("app", b"", Policy(daily_tokens=1000, max_tokens=50))


def _setup() -> tuple[Limiter, Ledger]:
    limiter = Limiter(clock=lambda: T0)
    ledger = Ledger(
        limiter, key_prefix="promptgate:", retention_days=35, max_users_per_key=10, clock=lambda: T0
    )
    return limiter, ledger


async def _tokens_today(limiter: Limiter) -> int | None:
    return (await limiter.remaining([KEY]))[0].tokens_today


def test_a_count_held_for_the_response_end_is_settled_by_the_ledger_write() -> None:
    async def run() -> tuple[int | None, int | None, int | None]:
        limiter, ledger = _setup()
        caller = Caller(KEY, limiter, AccessRecord("app"))
        caller.settle_at_response_end()
        await caller.admit(400)  # reserves 100 (400 bytes / 4) + the cap of 50
        await caller.charge({"prompt_tokens": 7, "completion_tokens": 3})
        held = await _tokens_today(limiter)
        entry = UsageEntry(key="app", route="/v1/chat/completions", status=200, latency_ms=1)
        await ledger.record(entry, caller.take_settlement())
        settled = await _tokens_today(limiter)
        hours = await ledger.read(["app"], range(int(T0 // 3600), int(T0 // 3600) + 1))
        return held, settled, next(iter(hours.values())).total["req"]

    held, settled, requests = asyncio.run(run())
    assert held == 1000 - 150  # the reserve, until the response ends
    assert settled == 1000 - 10  # the real count, carried by the ledger's write
    assert requests == 1


def test_a_count_after_the_response_end_settles_at_once() -> None:
    async def run() -> int | None:
        limiter, _ = _setup()
        caller = Caller(KEY, limiter, AccessRecord("app"))
        caller.settle_at_response_end()
        await caller.admit(400)
        assert caller.take_settlement() is None  # nothing counted yet
        await caller.charge({"prompt_tokens": 7, "completion_tokens": 3})
        return await _tokens_today(limiter)

    assert asyncio.run(run()) == 1000 - 10
