"""What a bearer value is: a JWT (a token to verify) or something else (a client key).

Nothing here verifies anything or imports a JWT library: it only reads a token's shape and
its unverified `iss`, so the gate can hand it to the one verifier meant for that issuer,
which then checks everything with its own pinned algorithms and keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from lib.errors import TokenRejectedError

# Far above any ID token seen from Auth0, Clerk, Supabase, Firebase, Cognito or Google
# (1-3 KB), far below what a header parser or a signature check should be made to chew.
MAX_TOKEN_CHARS = 8192

_SEGMENT = r"[A-Za-z0-9_-]+"
_JWT_SHAPE = re.compile(rf"^{_SEGMENT}\.{_SEGMENT}\.[A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token's header and claims as written by whoever made it: route by them, trust nothing."""

    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def issuer(self) -> str | None:
        """The `iss` claim if it is a string; only to pick the verifier."""
        issuer = self.claims.get("iss")
        return issuer if isinstance(issuer, str) else None


def bearer_value(authorization: str | None) -> str:
    """The value of an `Authorization: Bearer <value>` header; empty for anything else."""
    if not authorization:
        return ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


def looks_like_jwt(value: str) -> bool:
    """True when `value` has a JWS compact shape whose header is a JSON object (`eyJ...`)."""
    return value.startswith("eyJ") and value.count(".") == 2


def require_token_size(token: str) -> None:
    """Refuse (401) a token too long to be read: checked before any decoding."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejectedError(
            f"The token is longer than {MAX_TOKEN_CHARS} characters, the most this proxy reads."
        )


def read_unverified(value: str) -> UnverifiedToken | None:
    """Parse a compact JWS without verifying it; None when it is not one.

    The caller enforces `MAX_TOKEN_CHARS` first, so this never decodes a huge value.
    """
    if len(value) > MAX_TOKEN_CHARS or not _JWT_SHAPE.fullmatch(value):
        return None
    header_part, claims_part, _ = value.split(".")
    header, claims = _json_object(header_part), _json_object(claims_part)
    if header is None or claims is None:
        return None
    return UnverifiedToken(header=header, claims=claims)


def _json_object(segment: str) -> dict[str, Any] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8, bad JSON
        return None
    return data if isinstance(data, dict) else None
