"""What `GET /api/usage` answers: the usage ledger's series, groups, totals and top spenders."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UsageCounts(BaseModel):
    """Requests, tokens, errors by class and mean latency, summed over some hours."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    refused: int = Field(description="Answered 4xx by the proxy (bad requests, keys, models).")
    limited: int = Field(description="Answered 429: a rate limit or budget.")
    failed: int = Field(description="Answered 5xx: the upstream failed or timed out.")
    latency_ms_mean: float | None = Field(
        description="Mean time from the request to the end of its answer; null for none."
    )
    cache_hits: int = Field(default=0, description="Answered from the response cache.")
    tokens_saved: int = Field(
        default=0, description="Tokens the response cache answered instead of the upstream."
    )


class UsagePoint(UsageCounts):
    """One bucket (an hour or a UTC day) of one group."""

    start: str = Field(description="The bucket's first instant, ISO 8601 UTC.")
    group: str | None = Field(description="The key, user, model or route; null: no model.")
    key: str | None = Field(description="The key the user belongs to (group_by=user, key).")


class UsageGroup(UsageCounts):
    """One group over the whole range; `other` is the users beyond a key's daily cap."""

    group: str | None
    key: str | None
    other: bool = False


class UsageSpender(UsageCounts):
    """A key, or one user of a key's tokens (`user` null: the key's own calls)."""

    key: str
    user: str | None


class UsageReportBody(BaseModel):
    """The ledger from `from` to `to`, grouped by `group_by`."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "object": "usage",
                    "from": "2026-12-01T00:00:00Z",
                    "to": "2026-12-08T00:00:00Z",
                    "bucket": "day",
                    "group_by": "key",
                    "key": None,
                    "store": "redis",
                    "totals": {
                        "requests": 120,
                        "prompt_tokens": 3600,
                        "completion_tokens": 9000,
                        "total_tokens": 12600,
                        "refused": 2,
                        "limited": 5,
                        "failed": 1,
                        "latency_ms_mean": 812.4,
                        "cache_hits": 30,
                        "tokens_saved": 3150,
                    },
                    "series": [],
                    "groups": [],
                    "top_spenders": [],
                }
            ]
        },
    )

    object: Literal["usage"] = "usage"
    from_: str = Field(alias="from", description="The first bucket's start, ISO 8601 UTC.")
    to: str = Field(description="The end of the last bucket, ISO 8601 UTC (excluded).")
    bucket: Literal["hour", "day"]
    group_by: Literal["key", "user", "model", "route"]
    key: str | None = Field(description="The key asked about; null: every configured key.")
    store: Literal["memory", "redis"] = Field(
        description="`memory`: this instance's counts only (no REDIS_URL is set)."
    )
    totals: UsageCounts
    series: list[UsagePoint]
    groups: list[UsageGroup] = Field(description="Most tokens first.")
    top_spenders: list[UsageSpender] = Field(description="The ten who spent most tokens.")
