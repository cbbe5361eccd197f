"""Where limits are counted: the contract every store keeps, and the in-process store.

Counts live in fixed windows named by the limiter: a key's minute (requests and tokens), its
UTC day (tokens) and the deployment's UTC day (tokens, for `GLOBAL_DAILY_TOKENS`). Admission
reads them all, refuses when one is spent, and otherwise counts the request, in one atomic
step: one round trip for Redis (a Lua script), no await at all for the in-process store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

NO_LIMIT = -1


class Verdict(IntEnum):
    """Admission's answer: admitted, or which limit refused (the order they are checked in)."""

    ADMITTED = 0
    GLOBAL_DAILY_TOKENS = 1
    DAILY_TOKENS = 2
    TPM = 3
    RPM = 4


@dataclass(frozen=True, slots=True)
class Windows:
    """The store keys of one request's windows, and how long each must outlive `now`."""

    minute: str
    day: str
    global_day: str | None
    minute_ttl_s: int
    day_ttl_s: int
    now: float


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits admission checks, `NO_LIMIT` for none."""

    rpm: int = NO_LIMIT
    tpm: int = NO_LIMIT
    daily_tokens: int = NO_LIMIT
    global_daily_tokens: int = NO_LIMIT


@dataclass(frozen=True, slots=True)
class Counts:
    """What the windows held after admission (the request counted when admitted)."""

    verdict: Verdict
    requests: int
    minute_tokens: int
    day_tokens: int
    global_day_tokens: int


class LimitStore(Protocol):
    """A place to count; the Redis store raises `LimitStoreError` when it fails."""

    kind: str

    async def admit(self, windows: Windows, limits: Limits, *, count: bool = True) -> Counts:
        """Check every limit and, if none is spent and `count`, count one request."""
        ...

    async def add_tokens(self, windows: Windows, tokens: int) -> None:
        """Add a request's tokens to its minute, its day and the deployment's day."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise `LimitStoreError` when it does not."""
        ...


class MemoryStore:
    """Counts in this process: exact for one instance, per instance where many run."""

    kind = "memory"

    def __init__(self) -> None:
        # store key -> [expires at, requests, tokens]
        self._counters: dict[str, list[float]] = {}
        self._next_sweep = 0.0

    async def admit(self, windows: Windows, limits: Limits, *, count: bool = True) -> Counts:
        """Check and count without awaiting anything, so it is atomic on the event loop."""
        self._sweep(windows.now)
        minute = self._counter(windows.minute, windows.now + windows.minute_ttl_s)
        day = self._counter(windows.day, windows.now + windows.day_ttl_s)
        glob = (
            self._counter(windows.global_day, windows.now + windows.day_ttl_s)
            if windows.global_day
            else None
        )
        counts = [int(minute[1]), int(minute[2]), int(day[2]), int(glob[2]) if glob else 0]
        verdict = _verdict(limits, *counts)
        if verdict is Verdict.ADMITTED and count:
            minute[1] += 1
            counts[0] += 1
        return Counts(verdict, *counts)

    async def add_tokens(self, windows: Windows, tokens: int) -> None:
        """Add `tokens` to the three windows."""
        self._counter(windows.minute, windows.now + windows.minute_ttl_s)[2] += tokens
        self._counter(windows.day, windows.now + windows.day_ttl_s)[2] += tokens
        if windows.global_day:
            self._counter(windows.global_day, windows.now + windows.day_ttl_s)[2] += tokens

    async def ping(self) -> None:
        """Always answers."""

    def _counter(self, key: str, expires_at: float) -> list[float]:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = [expires_at, 0, 0]
        return counter

    def _sweep(self, now: float) -> None:
        # Windows are named by time, so old ones are never read again: drop them now and then.
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        for key in [k for k, c in self._counters.items() if c[0] <= now]:
            del self._counters[key]


def _verdict(limits: Limits, requests: int, tokens: int, day: int, glob: int) -> Verdict:
    """The same checks, in the same order, as the Redis store's script."""
    if limits.global_daily_tokens != NO_LIMIT and glob >= limits.global_daily_tokens:
        return Verdict.GLOBAL_DAILY_TOKENS
    if limits.daily_tokens != NO_LIMIT and day >= limits.daily_tokens:
        return Verdict.DAILY_TOKENS
    if limits.tpm != NO_LIMIT and tokens >= limits.tpm:
        return Verdict.TPM
    if limits.rpm != NO_LIMIT and requests >= limits.rpm:
        return Verdict.RPM
    return Verdict.ADMITTED
