"""The usage ledger: what every inference request spent, by UTC hour, key, user, model and route.

Each key's hour is one hash in the limit store, under the key's hash tag (`stores.store_key`),
whose fields are `<dimension>|<value>|<metric>`: dimension `k` (the key's totals, no value),
`u` (a user of its tokens), `m` (a model) or `r` (a route); metrics `req`, `in` and `out`
(prompt and completion tokens), `refused` (4xx other than 429), `limited` (429), `failed`
(5xx: the upstream failed or timed out, or the proxy could not serve), `ms` (the sum of
latencies, so a mean can be shown), `hit` (answered from the response cache) and `saved`
(tokens the cache answered instead of the upstream: a hit's, and a half-cached batch's).
Values are percent-escaped, so no user id or model id can reach into another field. At most
`USAGE_MAX_USERS_PER_KEY` users per key per day are kept by name (a set per key and day);
the rest are summed under `OTHER_USERS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from lib.access.stores import store_key

if TYPE_CHECKING:
    from lib.access.limits import Limiter, Reservation

HOUR_S = 3600
METRICS = ("req", "in", "out", "refused", "limited", "failed", "ms", "hit", "saved")
_FIELD_SAFE = "@._-:/+=,"


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One finished inference request, as the ledger counts it."""

    key: str
    route: str
    status: int
    latency_ms: float
    user: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
    saved_tokens: int = 0

    def metrics(self) -> dict[str, int]:
        """What the request adds to each of its dimensions (metrics that stay 0 left out)."""
        counted = {
            "req": 1,
            "in": self.prompt_tokens,
            "out": self.completion_tokens,
            "refused": int(400 <= self.status < 500 and self.status not in (429, 499)),
            "limited": int(self.status == 429),
            "failed": int(self.status >= 500),
            "ms": max(round(self.latency_ms), 0),
            "hit": int(self.cache_hit),
            "saved": max(self.saved_tokens, 0),
        }
        return {name: value for name, value in counted.items() if value}


@dataclass(frozen=True, slots=True)
class UsageWrite:
    """One entry as the store applies it: the hour's hash, the day's user set and the counts."""

    hour_key: str
    users_key: str
    ttl_s: int
    max_users: int
    user: str  # escaped; "" for a request without a user
    dimensions: tuple[str, ...]  # field prefixes: "k||", "m|<model>|", "r|<route>|"
    metrics: dict[str, int]


def escape(value: str) -> str:
    """A user or model id as it is stored in a field: `|`, `%`, `~`, spaces and controls escaped."""
    # quote() never escapes "~"; it is escaped here so that no id is stored as OTHER_USERS.
    return quote(value, safe=_FIELD_SAFE).replace("~", "%7E")


def unescape(value: str) -> str:
    """The id `escape` stored."""
    return unquote(value)


class Ledger:
    """Adds each finished request to its key's hour, and reads hours back for reports.

    Writes go where the limiter counts: the shared store, or this process's while the shared
    one fails (a failure never fails the request). Reads go to the shared store only, so a
    report is never silently one instance's; they raise `LimitStoreError` when it fails.
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        key_prefix: str,
        retention_days: int,
        max_users_per_key: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limiter = limiter
        self._prefix = key_prefix
        self._ttl_s = retention_days * 86_400 + HOUR_S
        self.retention_days = retention_days
        self._max_users = max_users_per_key
        self.clock = clock

    async def record(
        self, entry: UsageEntry, settlement: tuple[Reservation, int] | None = None
    ) -> None:
        """Count `entry` in the hour it ended in, and settle the request's reservation in the
        same store call (`Caller.take_settlement`); never raises."""
        hour = int(self.clock() // HOUR_S)
        write = UsageWrite(
            hour_key=self.hour_key(entry.key, hour),
            users_key=f"{store_key(self._prefix, entry.key)}:usage-users:{hour // 24}",
            ttl_s=self._ttl_s,
            max_users=self._max_users,
            user=escape(entry.user) if entry.user else "",
            dimensions=(
                "k||",
                f"m|{escape(entry.model or '-')}|",
                f"r|{escape(entry.route)}|",
            ),
            metrics=entry.metrics(),
        )
        await self._limiter.record_usage(write, settlement)

    def hour_key(self, key: str, hour: int) -> str:
        """The store key of `key`'s hash for `hour` (hours since 1970-01-01 UTC)."""
        return f"{store_key(self._prefix, key)}:usage:{hour}"

    async def read(self, keys: Iterable[str], hours: range) -> dict[tuple[str, int], HourCounts]:
        """Each key's counts for each hour in `hours` that holds any; raises `LimitStoreError`."""
        wanted = [(key, hour) for key in keys for hour in hours]
        hashes = [self.hour_key(key, hour) for key, hour in wanted]
        fields = await self._limiter.store.read_hours(hashes)
        return {
            where: HourCounts.parse(held)
            for where, held in zip(wanted, fields, strict=True)
            if held
        }


@dataclass(slots=True)
class HourCounts:
    """One key's hour, by dimension: `total`, and per user (as stored: escaped, or
    `OTHER_USERS`), model and route."""

    total: dict[str, int]
    users: dict[str, dict[str, int]]
    models: dict[str, dict[str, int]]
    routes: dict[str, dict[str, int]]

    @classmethod
    def parse(cls, fields: dict[str, int]) -> HourCounts:
        """The counts a hash's `<dimension>|<value>|<metric>` fields hold (others ignored)."""
        counts = cls({}, {}, {}, {})
        by_dimension = {"u": counts.users, "m": counts.models, "r": counts.routes}
        for name, value in fields.items():
            dimension, _, rest = name.partition("|")
            stored, _, metric = rest.rpartition("|")
            if metric not in METRICS:
                continue
            if dimension == "k":
                counts.total[metric] = counts.total.get(metric, 0) + value
            elif (table := by_dimension.get(dimension)) is not None:
                # Users stay escaped (so the overflow value cannot be confused with an id);
                # models and routes are read back as they were.
                value_of = stored if dimension == "u" else unescape(stored)
                row = table.setdefault(value_of, {})
                row[metric] = row.get(metric, 0) + value
        return counts
