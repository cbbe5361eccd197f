"""Where limits are counted: the contract every store keeps, and the in-process store.

Counts live in fixed windows named by the limiter: each account's minute (requests and
tokens) and UTC day (tokens), and the deployment's UTC day (tokens, `GLOBAL_DAILY_TOKENS`).
One request may be counted on two accounts (a token's user and the key it spends).
Admission reads every window, refuses when one limit cannot take the request's reserve, and
otherwise counts the request and holds the reserve on all of them, in one atomic step: one
round trip for Redis (a Lua script), no await at all for the in-process store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lib.access.usage import UsageWrite

# The usage ledger's bucket for users beyond a key's daily cap (lib/access/usage.py): stored
# values are percent-escaped, "~" included, so no user id is stored as it.
OTHER_USERS = "~other"

NO_LIMIT = -1


def store_key(prefix: str, account: str) -> str:
    """The start of every store key of `account` (a key's name, or `<key>:user:<hash>` for
    one of its token users): the key's name is the hash tag, so a caller's windows (a token
    user's and its key's) and ledger share one Redis Cluster slot, and one script serves them.
    Names hold no brace (policy.py), so the tag cannot end early."""
    tag, colon, rest = account.partition(":")
    return f"{prefix}{{{tag}}}{colon}{rest}"


class Verdict(IntEnum):
    """Admission's answer: admitted, or which limit refused (the order they are checked in)."""

    ADMITTED = 0
    GLOBAL_DAILY_TOKENS = 1
    DAILY_TOKENS = 2
    TPM = 3
    RPM = 4


@dataclass(frozen=True, slots=True)
class Account:
    """One account's windows (store keys) and limits, `NO_LIMIT` for none."""

    minute: str
    day: str
    rpm: int = NO_LIMIT
    tpm: int = NO_LIMIT
    daily_tokens: int = NO_LIMIT


@dataclass(frozen=True, slots=True)
class Windows:
    """Every window one request is counted in, and how long each must outlive `now`."""

    accounts: tuple[Account, ...]
    global_day: str | None
    global_daily_tokens: int
    minute_ttl_s: int
    day_ttl_s: int
    now: float


@dataclass(frozen=True, slots=True)
class AccountCounts:
    """What one account's windows hold."""

    requests: int
    minute_tokens: int
    day_tokens: int


@dataclass(frozen=True, slots=True)
class Counts:
    """What the windows held after admission (with the request and its reserve when admitted).

    `refused` is the index of the account that refused, or -1 (admitted, or the deployment's
    day refused).
    """

    verdict: Verdict
    refused: int
    accounts: tuple[AccountCounts, ...]
    global_day_tokens: int


class LimitStore(Protocol):
    """A place to count; the Redis store raises `LimitStoreError` when it fails."""

    kind: str

    async def admit(self, windows: Windows, reserve: int, *, count: bool = True) -> Counts:
        """Check every limit against `reserve` more tokens; when all can take it and `count`,
        count one request and add `reserve` tokens on every account and the deployment."""
        ...

    async def add_tokens(self, windows: Windows, delta: int) -> None:
        """Add `delta` tokens (negative: give back) to every window; a give-back skips a
        window that has expired."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise `LimitStoreError` when it does not."""
        ...

    async def add_usage(self, write: UsageWrite, settle: tuple[Windows, int] | None = None) -> None:
        """Add a finished request to the usage ledger (lib/access/usage.py): its user by name
        while the day's set has room, else under `OTHER_USERS`; with `settle`, also add its
        `delta` tokens to those windows, as `add_tokens` does, in the same step."""
        ...

    async def read_hours(self, keys: list[str]) -> list[dict[str, int]]:
        """Every field of each ledger hour hash in `keys` ({} for one that holds nothing)."""
        ...


class MemoryStore:
    """Counts in this process: exact for one instance, per instance where many run."""

    kind = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # store key -> [expires at, requests, tokens]
        self._counters: dict[str, list[float]] = {}
        self._next_sweep = 0.0
        # The usage ledger (lib/access/usage.py): hour hashes and each day's users of a key.
        self._clock = clock
        self._hours: dict[str, tuple[float, dict[str, int]]] = {}
        self._users: dict[str, tuple[float, set[str]]] = {}

    async def admit(self, windows: Windows, reserve: int, *, count: bool = True) -> Counts:
        """Check and count without awaiting anything, so it is atomic on the event loop."""
        self._sweep(windows.now)
        minute_until, day_until = _expiries(windows)
        counters = [
            (self._counter(a.minute, minute_until), self._counter(a.day, day_until))
            for a in windows.accounts
        ]
        glob = self._counter(windows.global_day, day_until) if windows.global_day else None
        counts = [AccountCounts(int(m[1]), int(m[2]), int(d[2])) for m, d in counters]
        global_tokens = int(glob[2]) if glob else 0
        verdict, refused = check(windows, counts, global_tokens, reserve)
        if verdict is Verdict.ADMITTED and count:
            for minute, day in counters:
                minute[1] += 1
                minute[2] += reserve
                day[2] += reserve
            if glob is not None:
                glob[2] += reserve
            counts = [
                AccountCounts(c.requests + 1, c.minute_tokens + reserve, c.day_tokens + reserve)
                for c in counts
            ]
            global_tokens += reserve
        return Counts(verdict, refused, tuple(counts), global_tokens)

    async def add_tokens(self, windows: Windows, delta: int) -> None:
        """Add `delta` to every window (a give-back only to windows still held)."""
        minute_until, day_until = _expiries(windows)
        keys = [(a.minute, minute_until) for a in windows.accounts]
        keys += [(a.day, day_until) for a in windows.accounts]
        if windows.global_day:
            keys.append((windows.global_day, day_until))
        for key, until in keys:
            if delta < 0 and key not in self._counters:
                continue
            self._counter(key, until)[2] += delta

    async def ping(self) -> None:
        """Always answers."""

    async def add_usage(self, write: UsageWrite, settle: tuple[Windows, int] | None = None) -> None:
        """Add `write`'s counts, its user by name while the day's set has room (and settle)."""
        if settle is not None:
            await self.add_tokens(*settle)
        now = self._clock()
        self._sweep(now)
        expires_at = now + write.ttl_s
        dimensions = list(write.dimensions)
        if write.user:
            users = self._users.setdefault(write.users_key, (expires_at, set()))[1]
            if write.user not in users and len(users) < write.max_users:
                users.add(write.user)
            dimensions.append(f"u|{write.user if write.user in users else OTHER_USERS}|")
        fields = self._hours.setdefault(write.hour_key, (expires_at, {}))[1]
        for dimension in dimensions:
            for metric, value in write.metrics.items():
                name = dimension + metric
                fields[name] = fields.get(name, 0) + value

    async def read_hours(self, keys: list[str]) -> list[dict[str, int]]:
        """Each hour hash's fields (a copy), {} for one not held."""
        now = self._clock()
        return [
            dict(held[1]) if (held := self._hours.get(key)) and held[0] > now else {}
            for key in keys
        ]

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
        for table in (self._hours, self._users):
            for key in [k for k, (expires_at, _) in table.items() if expires_at <= now]:
                del table[key]


def check(
    windows: Windows, counts: list[AccountCounts], global_tokens: int, reserve: int
) -> tuple[Verdict, int]:
    """The verdict and the refusing account: the same checks, in the same order, as the
    Redis store's script. A token limit refuses when it is spent or cannot take `reserve`."""
    if _cannot_take(windows.global_daily_tokens, global_tokens, reserve):
        return Verdict.GLOBAL_DAILY_TOKENS, -1
    for index, (account, held) in enumerate(zip(windows.accounts, counts, strict=True)):
        if _cannot_take(account.daily_tokens, held.day_tokens, reserve):
            return Verdict.DAILY_TOKENS, index
        if _cannot_take(account.tpm, held.minute_tokens, reserve):
            return Verdict.TPM, index
        if account.rpm != NO_LIMIT and held.requests >= account.rpm:
            return Verdict.RPM, index
    return Verdict.ADMITTED, -1


def _expiries(windows: Windows) -> tuple[float, float]:
    return windows.now + windows.minute_ttl_s, windows.now + windows.day_ttl_s


def _cannot_take(limit: int, used: int, reserve: int) -> bool:
    return limit != NO_LIMIT and (used >= limit or used + reserve > limit)
