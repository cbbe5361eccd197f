"""The access layer: who is calling (client keys with names and policies), and what they may
spend (rate limits and token budgets, counted in Redis or in this process).

Routes see one thing, a `Caller`, from `AccessControl.identify`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from lib.access.caller import Caller
from lib.access.keys import KeyRing
from lib.access.limits import RATE_LIMIT_HEADERS, AccessRecord, Limiter, Remaining
from lib.access.policy import Policy, load_keys
from lib.settings import Settings

__all__ = [
    "RATE_LIMIT_HEADERS",
    "AccessControl",
    "AccessRecord",
    "Caller",
    "Policy",
    "Remaining",
]


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
        keys, defaults = load_keys(settings)
        anonymous = defaults if settings.allow_anonymous else None
        self.keys = KeyRing(keys, anonymous=anonymous, clock=clock)
        store = None
        if (url := settings.limits_store_url) is not None:
            from lib.access.redis_store import RedisStore

            store = RedisStore(url.get_secret_value(), timeout_s=settings.limits_store_timeout_s)
        self.limiter = Limiter(
            store,
            global_daily_tokens=settings.global_daily_tokens,
            on_store_error=settings.limits_on_store_error,
            clock=clock,
            logger=logger,
        )

    def identify(self, authorization: str | None) -> Caller:
        """The caller the raw `Authorization` header names; raises `AuthenticationError`
        (401: missing, unknown or expired key) or `NotConfiguredError` (503: no keys)."""
        key = self.keys.identify(authorization)
        return Caller(key, self.limiter, AccessRecord(key.name))

    async def aclose(self) -> None:
        """Close the limit store's connections."""
        await self.limiter.aclose()
