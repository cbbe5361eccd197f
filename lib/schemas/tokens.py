"""Token bodies: `POST /v1/tokens`, its request and the token it answers."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from lib.schemas.fields import PositiveCount


class TokenRequest(BaseModel):
    """`POST /v1/tokens`: a token for one end user, narrowing the caller's key. Every field
    but `user` is optional; a limit left out is not applied for the user (the key's are)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"user": "user-1234", "ttl_s": 600, "rpm": 10, "daily_tokens": 20000}]
        },
    )

    user: str = Field(min_length=1, max_length=128, description="The end user's id in your app.")
    ttl_s: PositiveCount | None = Field(
        default=None, description="Seconds; default and most: TOKEN_MAX_TTL_S."
    )
    models: list[str] | None = Field(default=None, min_length=1, max_length=64)
    rpm: PositiveCount | None = None
    tpm: PositiveCount | None = None
    daily_tokens: PositiveCount | None = None
    cache: bool = Field(
        default=True,
        description="false: the response cache never answers nor keeps this token's requests.",
    )


class TokenLimits(BaseModel):
    """A token's own limits; `null` is none for the user (the key's still apply)."""

    rpm: int | None
    tpm: int | None
    daily_tokens: int | None


class TokenResponse(BaseModel):
    """A minted token: send it as `Authorization: Bearer <token>` until `expires_at`."""

    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: int = Field(description="Unix seconds.")
    user: str
    models: list[str]
    limits: TokenLimits
    cache: bool = Field(default=True, description="false: the response cache is off for it.")
