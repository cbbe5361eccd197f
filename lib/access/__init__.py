"""The access layer: who is calling (client keys with names and policies), and what they may
spend (rate limits and token budgets, counted in Redis or in this process).

Routes see one thing, a `Caller`, from `AccessControl.identify`: a client key's, or a bearer
token's (the proxy's own short-lived tokens, or the app's identity provider's), which also
names an end user counted under their own limits.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lib.access.bearer import bearer_value, looks_like_jwt
from lib.access.breaker import Breaker, BreakerReading
from lib.access.cache_rules import CacheRule, cache_rule
from lib.access.caller import Caller
from lib.access.fallbacks import Hop
from lib.access.keys import KeyRing, new_key
from lib.access.limits import AccessRecord, Limiter, Remaining, nearest_limit
from lib.access.policy import (
    ANONYMOUS,
    OIDC_KEY_NAME,
    AdminKey,
    NamedKey,
    Policies,
    Policy,
    load_policies,
)
from lib.access.refusals import RATE_LIMIT_HEADERS
from lib.access.usage import Ledger, UsageEntry
from lib.access.usage_report import (
    Bucket,
    Group,
    GroupBy,
    Tally,
    UsageReport,
    build_usage_report,
    hour_of,
)
from lib.errors import (
    AdminKeyRequiredError,
    AuthenticationError,
    NotEnabledError,
    TokenNotAllowedError,
    TokenRejectedError,
)
from lib.settings import Settings

if TYPE_CHECKING:
    from lib.access.response_cache import CachedAnswer, ResponseCache
    from lib.access.token_gate import TokenGate
    from lib.access.token_scope import TokenAsk, TokenGrant

__all__ = [
    "RATE_LIMIT_HEADERS",
    "AccessControl",
    "AccessRecord",
    "AdminKey",
    "Breaker",
    "BreakerReading",
    "Bucket",
    "CacheRule",
    "CachedAnswer",
    "Caller",
    "Group",
    "GroupBy",
    "Hop",
    "Ledger",
    "NamedKey",
    "Policy",
    "Remaining",
    "ResponseCache",
    "Tally",
    "TokenAsk",
    "TokenGrant",
    "UsageEntry",
    "UsageReport",
    "build_usage_report",
    "hour_of",
    "nearest_limit",
    "new_key",
]


def __getattr__(name: str) -> Any:
    """`TokenAsk` and `TokenGrant`, imported on first use: only minting and tokens need the
    token rules, so a cold start without them skips loading them; the response cache's
    classes likewise, loaded only where some caller's answers are cached."""
    if name in ("TokenAsk", "TokenGrant"):
        from lib.access import token_scope

        return getattr(token_scope, name)
    if name in ("CachedAnswer", "ResponseCache"):
        from lib.access import response_cache

        return getattr(response_cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class AccessControl:
    """The deployment's keys and limits, built once from the settings by the app factory.

    Raises `SettingsError` (one line naming the file and entry) for a bad policy file.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        policies = load_policies(settings)
        anonymous = policies.defaults if settings.allow_anonymous else None
        self.keys = KeyRing(policies.keys, anonymous=anonymous, clock=clock)
        self.tokens: TokenGate | None = None
        if settings.tokens_configured:  # PyJWT is imported only then
            from lib.access.token_gate import TokenGate

            self.tokens = TokenGate(settings, policies.keys, policies.users, clock=clock)
        store = None
        if (url := settings.limits_store_url) is not None:
            from lib.access.redis_store import RedisStore

            store = RedisStore(
                url.get_secret_value(),
                timeout_s=settings.limits_store_timeout_s,
                logger=logger,
                cluster=settings.redis_cluster,
            )
        self.admins = policies.admins
        self._cache_ttl_s = settings.cache_ttl_s
        self._prefix = settings.redis_key_prefix
        self.cache: ResponseCache | None = None
        if settings.cache_ttl_s > 0 or _any_cached(policies):
            from lib.access.response_cache import MemoryCache, ResponseCache

            self.cache = ResponseCache(
                store or MemoryCache(settings.cache_max_bytes),
                max_entry_bytes=settings.cache_max_entry_bytes,
                clock=clock,
                logger=logger,
            )
        # Each model's fallbacks, found by the id as the Hub compares it (case-insensitively).
        self._fallbacks = {model.casefold(): chain for model, chain in policies.fallbacks.items()}
        self.breaker = Breaker(
            store,
            failures=settings.fallback_breaker_failures,
            cooldown_s=settings.fallback_breaker_cooldown_s,
            key_prefix=settings.redis_key_prefix,
            clock=clock,
            logger=logger,
        )
        # Every key the ledger may hold usage of, as far as the configuration knows them.
        self.ledger_keys = [key.name for key in policies.keys]
        if settings.allow_anonymous:
            self.ledger_keys.append(ANONYMOUS)
        if settings.oidc_issuer is not None:
            self.ledger_keys.append(OIDC_KEY_NAME)
        self.limiter = Limiter(
            store,
            global_daily_tokens=settings.global_daily_tokens,
            on_store_error=settings.limits_on_store_error,
            key_prefix=settings.redis_key_prefix,
            clock=clock,
            logger=logger,
        )
        self.ledger = Ledger(
            self.limiter,
            key_prefix=settings.redis_key_prefix,
            retention_days=settings.usage_retention_days,
            max_users_per_key=settings.usage_max_users_per_key,
            clock=clock,
        )

    async def identify(self, authorization: str | None) -> Caller:
        """The caller the raw `Authorization` header names: a client key, or a bearer token.

        Raises `AuthenticationError` (401: missing, unknown or expired key; a refused token,
        code `invalid_token` or `token_expired`), `NotConfiguredError` (503: no keys) or
        `IdentityProviderUnavailableError` (503: the provider's keys cannot be fetched).
        """
        bearer = bearer_value(authorization)
        if looks_like_jwt(bearer):
            if self.tokens is None:
                raise TokenRejectedError(
                    "This deployment accepts no tokens (TOKEN_SECRET and OIDC_ISSUER are "
                    "unset); send a client key."
                )
            holder = await self.tokens.identify(bearer)
            record = AccessRecord(holder.key.name, user=holder.user.user)
            rule = self._cache_rule(holder.key, holder.user)
            return Caller(holder.key, self.limiter, record, user=holder.user, cache=rule)
        key = self.keys.identify(authorization)
        return Caller(key, self.limiter, AccessRecord(key.name), cache=self._cache_rule(key))

    def _cache_rule(self, key: NamedKey, user: NamedKey | None = None) -> CacheRule | None:
        if self.cache is None:
            return None
        return cache_rule(key, user, default_ttl_s=self._cache_ttl_s, prefix=self._prefix)

    def model_chain(self, model: str, caller: Caller) -> tuple[Hop, ...]:
        """`model`, then its fallbacks (`[fallbacks]`) that the caller's key and token may use."""
        fallbacks = self._fallbacks.get(model.casefold(), ())
        return (Hop(model), *(hop for hop in fallbacks if caller.may_use(hop.model)))

    def identify_admin(self, authorization: str | None) -> AdminKey:
        """The admin key the raw `Authorization` header holds, or raise: `AuthenticationError`
        (401: none, or unknown), `NotEnabledError` (404: a bearer, but no admin keys are
        configured) or `AdminKeyRequiredError` (403: a client key or a token)."""
        bearer = bearer_value(authorization)
        if not bearer:
            raise AuthenticationError(
                "Missing admin key. Send it as 'Authorization: Bearer <admin key>'.",
                code="missing_api_key",
            )
        if not self.admins:
            raise NotEnabledError(
                "This deployment has no admin keys: the owner sets ADMIN_API_KEYS "
                "(sha256:<hex> of a key; make key prints both) or an [admins] table in the "
                "policy file to read usage."
            )
        presented = hashlib.sha256(bearer.encode()).digest()
        found = None
        for admin in self.admins:  # every digest compared: the time says nothing
            if hmac.compare_digest(presented, admin.digest):
                found = admin
        if found is not None:
            return found
        if looks_like_jwt(bearer) or self.keys.knows(bearer):
            raise AdminKeyRequiredError(
                "This route needs an admin key (ADMIN_API_KEYS): client keys and tokens "
                "cannot read usage."
            )
        raise AuthenticationError("Invalid admin key.")

    def mint(self, caller: Caller, ask: TokenAsk) -> tuple[str, TokenGrant]:
        """A token for `ask`, carved from the caller's key. Refuses a caller holding a token
        (403), a deployment without `TOKEN_SECRET` (404 `not_enabled`) and asking too much (400)."""
        if caller.via_token:
            raise TokenNotAllowedError(
                "Tokens cannot mint tokens: POST /v1/tokens takes a client key."
            )
        if self.tokens is None:
            raise NotEnabledError(
                "This deployment mints no tokens: the owner turns minting on by setting "
                "TOKEN_SECRET (32+ random characters) in the server's environment."
            )
        return self.tokens.mint(caller.key, ask)

    async def aclose(self) -> None:
        """Close the limit store's connections."""
        await self.limiter.aclose()


def _any_cached(policies: Policies) -> bool:
    """True when the policy file turns the response cache on for some caller."""
    held = [policies.defaults, policies.users, *(key.policy for key in policies.keys)]
    return any(policy.cache_ttl_s for policy in held)
