"""Reports from the usage ledger: series by hour or day, totals and the top spenders.

A report reads every hour of the range for each key asked about (one pipelined read), then
sums in this process; the ledger holds no more than `USAGE_RETENTION_DAYS` of hours.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from lib.access.stores import OTHER_USERS
from lib.access.usage import HOUR_S, METRICS, HourCounts, Ledger, unescape

GroupBy = Literal["key", "user", "model", "route"]
Bucket = Literal["hour", "day"]
TOP_SPENDERS = 10


@dataclass(slots=True)
class Tally:
    """Counts summed over some hours: requests, tokens, errors by class and latency."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))

    def add(self, counts: dict[str, int]) -> None:
        """Add one dimension's counts of one hour."""
        for metric, value in counts.items():
            self.counts[metric] += value

    @property
    def requests(self) -> int:
        """Requests counted (refused and failed ones included)."""
        return self.counts["req"]

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens."""
        return self.counts["in"] + self.counts["out"]

    def as_row(self) -> dict[str, int | float | None]:
        """The tally as the API reports it."""
        requests = self.requests
        return {
            "requests": requests,
            "prompt_tokens": self.counts["in"],
            "completion_tokens": self.counts["out"],
            "total_tokens": self.total_tokens,
            "refused": self.counts["refused"],
            "limited": self.counts["limited"],
            "failed": self.counts["failed"],
            "latency_ms_mean": round(self.counts["ms"] / requests, 1) if requests else None,
            "cache_hits": self.counts["hit"],
            "tokens_saved": self.counts["saved"],
        }


@dataclass(frozen=True, slots=True)
class Group:
    """One group of a report: its name (a key, user, model or route) and the key it is of
    (for users: a user id is a user of one key); `other` marks the users beyond the cap."""

    name: str | None
    key: str | None = None
    other: bool = False


@dataclass(slots=True)
class UsageReport:
    """What `GET /api/usage` answers: per bucket and group, per group, and in total."""

    first_hour: int
    last_hour: int
    bucket: Bucket
    group_by: GroupBy
    series: dict[tuple[int, Group], Tally]
    groups: dict[Group, Tally]
    total: Tally
    top_spenders: list[tuple[Group, Tally]]


async def build_usage_report(
    ledger: Ledger,
    keys: Iterable[str],
    *,
    first_hour: int,
    last_hour: int,
    bucket: Bucket,
    group_by: GroupBy,
) -> UsageReport:
    """The report of `keys`' usage from `first_hour` to `last_hour` (both included, hours
    since 1970-01-01 UTC); raises `LimitStoreError` when the store cannot be read."""
    held = await ledger.read(list(keys), range(first_hour, last_hour + 1))
    report = UsageReport(first_hour, last_hour, bucket, group_by, {}, {}, Tally(), [])
    spenders: dict[Group, Tally] = defaultdict(Tally)
    for (key, hour), counts in sorted(held.items(), key=lambda item: item[0][1]):
        start = hour if bucket == "hour" else hour - hour % 24
        report.total.add(counts.total)
        for group, part in _groups(key, counts, group_by):
            report.series.setdefault((start, group), Tally()).add(part)
            report.groups.setdefault(group, Tally()).add(part)
        direct = dict(counts.total)
        for user, part in counts.users.items():
            spenders[_user_group(key, user)].add(part)
            for metric, value in part.items():
                direct[metric] = direct.get(metric, 0) - value
        spenders[Group(None, key)].add({m: v for m, v in direct.items() if v > 0})
    ranked = sorted(spenders.items(), key=lambda item: -item[1].total_tokens)
    report.top_spenders = [(g, t) for g, t in ranked if t.requests][:TOP_SPENDERS]
    return report


def _groups(key: str, counts: HourCounts, group_by: GroupBy) -> Iterable[tuple[Group, dict]]:
    if group_by == "key":
        return [(Group(key, key), counts.total)]
    if group_by == "user":
        return [(_user_group(key, user), part) for user, part in counts.users.items()]
    table = counts.models if group_by == "model" else counts.routes
    return [(Group(None if name == "-" else name), part) for name, part in table.items()]


def _user_group(key: str, stored: str) -> Group:
    if stored == OTHER_USERS:
        return Group("other", key, other=True)
    return Group(unescape(stored), key)


def hour_of(epoch_s: float) -> int:
    """The ledger's hour (since 1970-01-01 UTC) that holds `epoch_s`."""
    return int(epoch_s // HOUR_S)
