"""The service's own answers: the model list, `/api/health` and `/api/limits`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    """One entry of `/v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    task: str | None = Field(
        default=None, description="`chat-completion`, `feature-extraction`, or null when unknown."
    )


class ModelList(BaseModel):
    """The OpenAI list shape for `/v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """What `/api/health` reports: configuration as booleans, never values."""

    status: Literal["ok"] = "ok"
    version: str
    token_configured: bool
    keys_configured: bool
    anonymous_allowed: bool
    limits_store: Literal["memory", "redis"]
    limits_store_reachable: bool


class KeyPolicy(BaseModel):
    """A key's policy; `null` is no limit (and, for `models`, every allowed model)."""

    rpm: int | None
    tpm: int | None
    daily_tokens: int | None
    max_tokens: int | None
    models: list[str] | None
    expires: str | None = Field(description="ISO 8601, UTC; after it the key is refused.")


class LimitsRemaining(BaseModel):
    """What the key has left; `null` where no limit applies."""

    requests_this_minute: int | None
    tokens_this_minute: int | None
    tokens_today: int | None
    deployment_tokens_today: int | None
    minute_resets_in_s: int
    day_resets_in_s: int = Field(description="Seconds until 00:00 UTC.")


class LimitsReport(BaseModel):
    """What `/api/limits` reports to the caller about their own key."""

    key: str = Field(description="The key's name (never the key).")
    user: str | None = Field(
        default=None,
        description="With a bearer token: its user; `policy` and `remaining` are then theirs.",
    )
    policy: KeyPolicy
    remaining: LimitsRemaining
    key_policy: KeyPolicy | None = Field(
        default=None, description="With a bearer token: the key's policy, which applies too."
    )
    key_remaining: LimitsRemaining | None = Field(
        default=None, description="With a bearer token: what the key has left."
    )
    nearest_limit: Literal["user", "key"] | None = Field(
        default=None,
        description="Whose limits are nearer to refusing: the smallest share left of any "
        "limit, a token limit counting what is left beyond one answer of `max_tokens`; null "
        "when none applies.",
    )
    limits_store: Literal["memory", "redis"]
