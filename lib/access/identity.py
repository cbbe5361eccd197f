"""Tokens from the app's identity provider (OIDC): ID or access tokens signed by its keys.

`OIDC_ISSUER`, `OIDC_AUDIENCE` and the provider's key set (JWKS) decide. Only asymmetric
algorithms are accepted (RS256, ES256, EdDSA); the token's `alg` is checked before any key
is looked up, so `none` and HS256 (algorithm confusion) never reach a signature check.
The key set is cached per instance and refetched for an unknown `kid` at most once a
minute; when it cannot be fetched, requests get a 503, never a pass.
Imported only when `OIDC_ISSUER` is set (it loads PyJWT through `jwt_codec`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lib.access import jwt_codec
from lib.access.jwks_source import RETRY_AFTER_FAILURE_S
from lib.access.token_scope import is_valid_user
from lib.errors import IdentityProviderUnavailableError, TokenRejectedError

REFETCH_INTERVAL_S = 60
# A warm instance refreshes keys this old on its next use, so a key the provider withdrew
# stops being trusted; if that refresh fails, the cached keys keep serving.
MAX_KEY_SET_AGE_S = 3600
_REQUIRED = ("iss", "aud", "sub", "exp")
_KEY_TYPES = {"RSA", "EC", "OKP"}


class KeySetSource(Protocol):
    """Fetches the provider's keys; raises `IdentityProviderUnavailableError` on failure."""

    async def fetch(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """A user the identity provider vouches for: its `sub`, and when the token expires."""

    user: str
    expires_at: int


class OidcVerifier:
    """Verifies the provider's tokens against its cached key set. `clock` gives unix seconds."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        source: KeySetSource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._source = source
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] | None = None
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failure: IdentityProviderUnavailableError | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0  # how many times the key set was fetched (tests and the log read it)

    async def verify(self, token: str) -> SignedInUser:
        """The signed-in user, or `TokenRejectedError` / `TokenExpiredError` naming the rule,
        or `IdentityProviderUnavailableError` when the key set cannot be had."""
        header = jwt_codec.read_header(token)
        if header.get("alg") not in jwt_codec.ASYMMETRIC_ALGORITHMS:
            accepted = ", ".join(jwt_codec.ASYMMETRIC_ALGORITHMS)
            raise TokenRejectedError(
                "The token's signing algorithm (alg) is not accepted for sign-in tokens; "
                f"accepted: {accepted}."
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejectedError("The token's header names no signing key (kid).")
        jwk = await self._key_for(kid)
        claims = jwt_codec.verify_with_jwk(
            token, jwk, issuer=self._issuer, audience=self._audience, required=_REQUIRED
        )
        jwt_codec.check_times(claims, self._clock())
        if not is_valid_user(claims["sub"]):
            raise TokenRejectedError(
                "The token's subject (sub) must be 1-128 printable characters."
            )
        return SignedInUser(user=claims["sub"], expires_at=int(claims["exp"]))

    async def _key_for(self, kid: str) -> dict[str, Any]:
        now = self._clock()
        known = self._keys is not None and kid in self._keys
        stale = self._fetched_at is not None and now - self._fetched_at >= MAX_KEY_SET_AGE_S
        if not known or stale:
            if self._fetch_running() or self._may_fetch(now):
                try:
                    await self._refresh()
                except IdentityProviderUnavailableError:
                    if self._keys is None:
                        raise
            elif self._keys is None:
                raise self._failure or IdentityProviderUnavailableError(
                    "Cannot check sign-in tokens: the identity provider's keys are not loaded."
                )
        if self._keys is not None and kid in self._keys:
            return self._keys[kid]
        raise TokenRejectedError(
            "The token's signing key (kid) is not in the identity provider's key set."
        )

    def _may_fetch(self, now: float) -> bool:
        if self._attempted_at is None:
            return True
        wait = REFETCH_INTERVAL_S if self._keys is not None else RETRY_AFTER_FAILURE_S
        return now - self._attempted_at >= wait

    def _fetch_running(self) -> bool:
        task = self._inflight
        return (
            task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
        )

    async def _refresh(self) -> None:
        """Fetch once for every concurrent caller on this event loop."""
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            self._attempted_at = self._clock()
            task = loop.create_task(self._fetch_and_store())
            self._inflight = task
        await asyncio.shield(task)

    async def _fetch_and_store(self) -> None:
        self.fetches += 1
        try:
            keys = await self._source.fetch()
        except IdentityProviderUnavailableError as exc:
            self._failure = exc
            raise
        self._keys = {
            key["kid"]: key
            for key in keys
            if isinstance(key.get("kid"), str)
            and key.get("kty") in _KEY_TYPES
            and key.get("use", "sig") == "sig"
        }
        self._fetched_at = self._clock()
        self._failure = None
