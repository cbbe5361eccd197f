"""Signing and checking JWTs: the one module that imports PyJWT and catches its errors.

Imported only when tokens or an identity provider are configured (it loads PyJWT and, through
it, `cryptography`). Every PyJWT exception becomes a `TokenRejectedError` whose message names
the rule that failed; none carries the token or a claim's value.

Time claims (`exp`, `nbf`, `iat`) are checked here against an injected clock rather than by
PyJWT, which reads the wall clock itself: tests and the browser test then control time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidJTIError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWKError,
)

from lib.access.bearer import require_token_size
from lib.errors import TokenExpiredError, TokenRejectedError

# Clocks of servers and identity providers drift by seconds; half a minute absorbs that
# without stretching a short-lived token's life by much.
LEEWAY_S = 30
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")


def sign_hs256(claims: dict[str, Any], secret: str) -> str:
    """A compact JWS of `claims`, HS256 with `secret`."""
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


def verify_hs256(
    token: str, secrets: Sequence[str], *, issuer: str, audience: str, required: Iterable[str]
) -> dict[str, Any]:
    """The claims of an HS256 token signed with any of `secrets`, its `iss` and `aud` checked.

    Time claims are not checked here: call `check_times` next.
    """
    require_token_size(token)
    last: InvalidSignatureError | None = None
    for secret in secrets:
        try:
            return _decode(token, secret, ["HS256"], issuer, audience, required)
        except InvalidSignatureError as exc:  # try the previous secret during a rotation
            last = exc
    raise _rejection(last or InvalidSignatureError(), ["HS256"]) from last


def verify_with_jwk(
    token: str,
    jwk: dict[str, Any],
    *,
    issuer: str,
    audience: str,
    required: Iterable[str],
) -> dict[str, Any]:
    """The claims of a token signed by the public key `jwk` with an asymmetric algorithm.

    The algorithm allowlist is fixed (RS256, ES256, EdDSA), never taken from the token, and
    the token's `alg` must also be the key's own: an HS256 token whose "secret" is the
    provider's public key (algorithm confusion) is refused before any signature check.
    """
    require_token_size(token)
    try:
        key = jwt.PyJWK.from_dict(jwk)
    except PyJWKError as exc:
        raise TokenRejectedError(
            "The identity provider's key for this token is not one this proxy can use."
        ) from exc
    if key.algorithm_name not in ASYMMETRIC_ALGORITHMS:
        raise TokenRejectedError(
            "The identity provider's key for this token is not an RS256, ES256 or EdDSA key."
        )
    try:
        return _decode(token, key, list(ASYMMETRIC_ALGORITHMS), issuer, audience, required)
    except InvalidSignatureError as exc:
        raise _rejection(exc, ASYMMETRIC_ALGORITHMS) from exc


def read_header(token: str) -> dict[str, Any]:
    """The token's header, unverified (to find its `kid`); refuses malformed tokens."""
    require_token_size(token)
    try:
        return jwt.get_unverified_header(token)
    except InvalidTokenError as exc:
        raise _rejection(exc, ASYMMETRIC_ALGORITHMS) from exc


def check_times(
    claims: dict[str, Any], now: float, *, leeway_s: float = LEEWAY_S, max_life_s: int | None = None
) -> None:
    """Refuse a token that has expired, is not yet valid, was issued in the future, or lives
    longer than `max_life_s` (when given; measured from `iat`). `exp` is required.
    """
    exp = _time_claim(claims, "exp")
    if exp is None:
        raise TokenRejectedError("The token lacks the required claim 'exp'.")
    if now >= exp + leeway_s:
        when = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise TokenExpiredError(f"The token expired at {when} (exp); get a new one.")
    nbf = _time_claim(claims, "nbf")
    if nbf is not None and nbf > now + leeway_s:
        raise TokenRejectedError("The token is not valid yet (nbf is in the future).")
    iat = _time_claim(claims, "iat")
    if iat is not None and iat > now + leeway_s:
        raise TokenRejectedError("The token was issued in the future (iat); check the clock.")
    if max_life_s is not None:
        if iat is None:
            raise TokenRejectedError("The token lacks the required claim 'iat'.")
        if exp - iat > max_life_s:
            raise TokenRejectedError(
                f"The token lives longer (exp - iat) than this deployment allows "
                f"(TOKEN_MAX_TTL_S = {max_life_s} s)."
            )


def _decode(
    token: str,
    key: Any,
    algorithms: list[str],
    issuer: str,
    audience: str,
    required: Iterable[str],
) -> dict[str, Any]:
    options = {
        "require": list(required),
        # Checked by check_times against the injected clock.
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
    }
    try:
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            options=options,  # type: ignore[arg-type]
        )
    except InvalidSignatureError:
        raise  # verify_hs256 tries the next secret; _rejection names it otherwise
    except (InvalidTokenError, InvalidKeyError) as exc:
        raise _rejection(exc, algorithms) from exc


def _rejection(exc: Exception, algorithms: Sequence[str]) -> TokenRejectedError:
    """Our message for PyJWT's exception: the rule broken, never PyJWT's text (it may quote
    a key) nor any value from the token."""
    if isinstance(exc, InvalidAlgorithmError):
        accepted = ", ".join(algorithms)
        return TokenRejectedError(
            f"The token's signing algorithm (alg) is not accepted here; accepted: {accepted}."
        )
    if isinstance(exc, InvalidSignatureError | InvalidKeyError):
        return TokenRejectedError("The token's signature does not verify.")
    if isinstance(exc, MissingRequiredClaimError):
        return TokenRejectedError(f"The token lacks the required claim '{exc.claim}'.")
    if isinstance(exc, InvalidIssuerError):
        return TokenRejectedError("The token's issuer (iss) is not the one this proxy accepts.")
    if isinstance(exc, InvalidAudienceError):
        return TokenRejectedError("The token's audience (aud) is not this proxy.")
    if isinstance(exc, InvalidSubjectError):
        return TokenRejectedError("The token's subject (sub) must be a string.")
    if isinstance(exc, InvalidJTIError):
        return TokenRejectedError("The token's id (jti) must be a string.")
    if isinstance(exc, DecodeError):
        return TokenRejectedError("The bearer value is not a well-formed token.")
    return TokenRejectedError("The token is not valid.")


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejectedError(f"The token's claim '{name}' must be a number of seconds.")
    return float(value)
