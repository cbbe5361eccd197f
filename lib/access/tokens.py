"""The proxy's own tokens: short-lived HS256 JWTs, each naming one end user and its scope.

Claims (a contract: an app's backend may mint the same tokens with any JWT library):
`iss` and `aud` "promptgate", `sub` (the user), `key` (the parent key's name), `key_hash`
(`policy.key_hash` of the parent's `sha256`: rotating the key voids the token), `models`,
`rpm`, `tpm`, `daily_tokens` (null when the token sets no such limit), `iat`, `exp`, `jti`.
Imported only when `TOKEN_SECRET` is set (it loads PyJWT through `jwt_codec`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from lib.access import jwt_codec
from lib.access.token_scope import LIMIT_FIELDS, TokenGrant, is_valid_user
from lib.errors import TokenRejectedError
from lib.model_ids import is_valid_model_id
from lib.settings import MIN_TOKEN_SECRET_CHARS

ISSUER = AUDIENCE = "promptgate"
CLAIMS = (
    "iss",
    "aud",
    "sub",
    "key",
    "key_hash",
    "models",
    "rpm",
    "tpm",
    "daily_tokens",
    "iat",
    "exp",
    "jti",
)
_REQUIRED = ("iss", "aud", "sub", "key", "key_hash", "iat", "exp", "jti")
_KEY_HASH = re.compile(r"^[0-9a-f]{16}$")
DEFAULT_MAX_TTL_S = 3600


class ProxyTokens:
    """Mints and verifies the proxy's tokens with `TOKEN_SECRET`.

    `previous_secret` (`TOKEN_SECRET_PREVIOUS`) still verifies during a rotation; it never
    signs. `clock` gives unix seconds (tests inject one).
    """

    def __init__(
        self,
        secret: str,
        *,
        previous_secret: str | None = None,
        max_ttl_s: int = DEFAULT_MAX_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for value in (secret, previous_secret):
            if value is not None and len(value) < MIN_TOKEN_SECRET_CHARS:
                raise ValueError(f"a token secret must be {MIN_TOKEN_SECRET_CHARS}+ characters")
        self._secrets = [secret] + ([previous_secret] if previous_secret else [])
        self.max_ttl_s = max_ttl_s
        self.clock = clock

    def mint(self, grant: TokenGrant) -> str:
        """The signed token for `grant` (built by `token_scope.grant_token`)."""
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": grant.user,
            "key": grant.key,
            "key_hash": grant.key_hash,
            "models": None if grant.models is None else list(grant.models),
            **grant.limits,
            "iat": grant.issued_at,
            "exp": grant.expires_at,
            "jti": grant.jti,
        }
        if not grant.cache:  # absent means allowed, so tokens minted before stay as they were
            claims["cache"] = False
        return jwt_codec.sign_hs256(claims, self._secrets[0])

    def verify(self, token: str) -> TokenGrant:
        """The grant a valid token carries, or `TokenRejectedError` / `TokenExpiredError`
        naming the rule it broke. The parent key's own state is the caller's to check."""
        claims = jwt_codec.verify_hs256(
            token, self._secrets, issuer=ISSUER, audience=AUDIENCE, required=_REQUIRED
        )
        jwt_codec.check_times(claims, self.clock(), max_life_s=self.max_ttl_s)
        return _grant_from_claims(claims)


def _grant_from_claims(claims: dict[str, Any]) -> TokenGrant:
    """Check the types of the proxy's own claims: a backend minting by hand may get them wrong."""
    user, key = claims["sub"], claims["key"]
    if not is_valid_user(user):
        raise TokenRejectedError("The token's subject (sub) must be 1-128 printable characters.")
    if not isinstance(key, str) or not key:
        raise TokenRejectedError("The token's claim 'key' must name the key that minted it.")
    key_hash = claims["key_hash"]
    if not isinstance(key_hash, str) or not _KEY_HASH.match(key_hash):
        raise TokenRejectedError(
            "The token's claim 'key_hash' must be 16 lowercase hex digits: the start of the "
            "SHA-256 of the key's sha256."
        )
    models = claims.get("models")
    if models is not None and (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and (m == "*" or is_valid_model_id(m)) for m in models)
    ):
        raise TokenRejectedError("The token's claim 'models' must be a list of model ids or null.")
    limits: dict[str, int | None] = {}
    for name in LIMIT_FIELDS:
        value = claims.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise TokenRejectedError(
                f"The token's claim '{name}' must be a positive integer or null."
            )
        limits[name] = value
    cache = claims.get("cache", True)
    if not isinstance(cache, bool):
        raise TokenRejectedError("The token's claim 'cache' must be true or false.")
    return TokenGrant(
        user=user,
        key=key,
        models=None if models is None else tuple(models),
        rpm=limits["rpm"],
        tpm=limits["tpm"],
        daily_tokens=limits["daily_tokens"],
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
        jti=str(claims["jti"]),
        key_hash=key_hash,
        cache=cache,
    )
