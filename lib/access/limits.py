"""Rate limits and token budgets: windows, admission, token counts, refusals and their headers.

Requests count at admission; tokens count from the usage the upstream reports, once the
answer is known. A request is refused when its key's minute or day is already spent, so a
key may overshoot a token limit by the requests in flight when it ran out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from lib.access.policy import NamedKey
from lib.access.stores import NO_LIMIT, Counts, Limits, LimitStore, MemoryStore, Verdict, Windows
from lib.errors import LimitStoreError, ProxyError, QuotaExceededError, RateLimitExceededError

_MINUTE_S = 60
_DAY_S = 86_400
# After a failure, the shared store is not asked again for this long: a hung store costs
# one bounded wait every few seconds, not one per request.
_STORE_RETRY_AFTER_S = 2.0
_FAILURE_LOG_EVERY_S = 60.0
_PREFIX = "promptgate:limits"
_T = TypeVar("_T")
# Every header a limited response may carry (CORS exposes them to browsers).
RATE_LIMIT_HEADERS = (
    *(
        f"x-ratelimit-{part}-{unit}"
        for unit in ("requests", "tokens")
        for part in ("limit", "remaining", "reset")
    ),
    "x-should-retry",
)


@dataclass(slots=True)
class AccessRecord:
    """One request's dealings with the access layer, for its log line (never the key)."""

    key: str
    user: str | None = None  # the end user a token names
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    refused_by: str | None = None


@dataclass(frozen=True, slots=True)
class Remaining:
    """What a key has left: `None` where its policy sets no limit."""

    requests_this_minute: int | None
    tokens_this_minute: int | None
    tokens_today: int | None
    deployment_tokens_today: int | None
    minute_resets_in_s: int
    day_resets_in_s: int


class Limiter:
    """Admits requests and counts tokens against each key's policy, in one store.

    With a shared store, `on_store_error` decides what a failure does: `local` counts in
    this process instead (and logs it, at most once a minute), `closed` refuses with 503.
    """

    def __init__(
        self,
        store: LimitStore | None = None,
        *,
        global_daily_tokens: int | None = None,
        on_store_error: Literal["local", "closed"] = "local",
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._local = MemoryStore()
        self._store: LimitStore = store or self._local
        self._global_daily_tokens = global_daily_tokens
        self._on_store_error = on_store_error
        self._clock = clock
        self._logger = logger or logging.getLogger("promptgate")
        self._store_retry_at = 0.0
        self._failure_logged_at = -math.inf

    @property
    def store_kind(self) -> str:
        """`memory` or `redis`: the store that counts when it answers."""
        return self._store.kind

    def applies_to(self, key: NamedKey) -> bool:
        """True when `key`'s requests are counted (it has a limit, or the deployment has).

        A token's user (`key.user`) counts only its own limits: the deployment's day is
        counted once, on the key the token spends.
        """
        if key.user is not None:
            return key.policy.counted
        return key.policy.counted or self._global_daily_tokens is not None

    async def admit(self, key: NamedKey, record: AccessRecord) -> dict[str, str]:
        """Count one request of `key`, or raise the refusal; return the rate-limit headers.

        Raises `RateLimitExceededError` (minute spent), `QuotaExceededError` (day spent) or,
        with `closed`, `LimitStoreError`; `record.refused_by` names the limit.
        """
        windows = self._windows(key)
        limits = self._limits(key)
        try:
            counts = await self._with_store(lambda store: store.admit(windows, limits))
        except LimitStoreError:
            record.refused_by = "limit_store_unavailable"
            raise
        headers = _rate_limit_headers(key, counts, windows)
        if counts.verdict is not Verdict.ADMITTED:
            prefix = "user_" if key.user is not None else ""
            record.refused_by = prefix + _REFUSED_BY[counts.verdict]
            raise _refusal(key, counts.verdict, windows, headers)
        return headers

    async def add_tokens(self, key: NamedKey, tokens: int) -> None:
        """Count `tokens` against `key`'s minute and day and the deployment's day.

        Never raises: the answer is already made. A failing store is logged (and, with
        `local`, the tokens are counted in this process).
        """
        if tokens <= 0 or not self.applies_to(key):
            return
        windows = self._windows(key)
        # With `closed` there is nothing left to refuse: the failure is logged, and that is all.
        with contextlib.suppress(LimitStoreError):
            await self._with_store(lambda store: store.add_tokens(windows, tokens))

    async def remaining(self, key: NamedKey) -> Remaining:
        """What `key` has left this minute and today, without counting a request."""
        windows = self._windows(key)
        counts = await self._with_store(
            lambda store: store.admit(windows, self._limits(key), count=False)
        )
        policy = key.policy
        return Remaining(
            requests_this_minute=_left(policy.rpm, counts.requests),
            tokens_this_minute=_left(policy.tpm, counts.minute_tokens),
            tokens_today=_left(policy.daily_tokens, counts.day_tokens),
            deployment_tokens_today=_left(self._global_daily_tokens, counts.global_day_tokens),
            minute_resets_in_s=_resets_in(windows.now, _MINUTE_S),
            day_resets_in_s=_resets_in(windows.now, _DAY_S),
        )

    async def store_answers(self) -> bool:
        """True when the store answers now (the in-process one always does)."""
        try:
            await self._store.ping()
        except LimitStoreError:
            return False
        return True

    async def aclose(self) -> None:
        """Close the shared store's connections."""
        aclose = getattr(self._store, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _with_store(self, operation: Callable[[LimitStore], Awaitable[_T]]) -> _T:
        if self._store is self._local:
            return await operation(self._local)
        if time.monotonic() >= self._store_retry_at:
            try:
                return await operation(self._store)
            except LimitStoreError as exc:
                self._store_retry_at = time.monotonic() + _STORE_RETRY_AFTER_S
                self._log_store_failure(exc)
                if self._on_store_error == "closed":
                    raise
        elif self._on_store_error == "closed":
            raise LimitStoreError("The limit store is unreachable; try again shortly.")
        return await operation(self._local)

    def _log_store_failure(self, exc: LimitStoreError) -> None:
        now = time.monotonic()
        if now - self._failure_logged_at < _FAILURE_LOG_EVERY_S:
            return
        self._failure_logged_at = now
        action = (
            "refusing requests (503)"
            if self._on_store_error == "closed"
            else "counting in this process instead"
        )
        event = {"event": "limit_store_failed", "store": self._store.kind, "error": exc.message}
        self._logger.warning(json.dumps({**event, "action": action}, separators=(",", ":")))

    def _windows(self, key: NamedKey) -> Windows:
        now = self._clock()
        day = int(now // _DAY_S)  # days since 1970-01-01, UTC
        return Windows(
            minute=f"{_PREFIX}:{key.name}:m:{int(now // _MINUTE_S)}",
            day=f"{_PREFIX}:{key.name}:d:{day}",
            global_day=f"{_PREFIX}:*:d:{day}" if self._counts_deployment(key) else None,
            minute_ttl_s=2 * _MINUTE_S,
            day_ttl_s=2 * _DAY_S,
            now=now,
        )

    def _limits(self, key: NamedKey) -> Limits:
        policy = key.policy
        return Limits(
            rpm=policy.rpm or NO_LIMIT,
            tpm=policy.tpm or NO_LIMIT,
            daily_tokens=policy.daily_tokens or NO_LIMIT,
            global_daily_tokens=(self._global_daily_tokens or NO_LIMIT)
            if self._counts_deployment(key)
            else NO_LIMIT,
        )

    def _counts_deployment(self, key: NamedKey) -> bool:
        return self._global_daily_tokens is not None and key.user is None


def _left(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(limit - used, 0)


def _resets_in(now: float, window_s: int) -> int:
    return max(math.ceil(window_s - now % window_s), 1)


def _duration(seconds: int) -> str:
    """OpenAI's reset format: `12s`, `6m0s`, `17h3m20s`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _rate_limit_headers(key: NamedKey, counts: Counts, windows: Windows) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the limits `key` has (tokens: per minute, else day)."""
    policy = key.policy
    headers: dict[str, str] = {}
    minute_reset = _duration(_resets_in(windows.now, _MINUTE_S))
    if policy.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(policy.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(policy.rpm - counts.requests, 0))
        headers["x-ratelimit-reset-requests"] = minute_reset
    if policy.tpm is not None:
        token_limit, used, reset = policy.tpm, counts.minute_tokens, minute_reset
    elif policy.daily_tokens is not None:
        token_limit, used = policy.daily_tokens, counts.day_tokens
        reset = _duration(_resets_in(windows.now, _DAY_S))
    else:
        return headers
    headers["x-ratelimit-limit-tokens"] = str(token_limit)
    headers["x-ratelimit-remaining-tokens"] = str(max(token_limit - used, 0))
    headers["x-ratelimit-reset-tokens"] = reset
    return headers


def _refusal(
    key: NamedKey, verdict: Verdict, windows: Windows, headers: dict[str, str]
) -> ProxyError:
    policy = key.policy
    who = f"user '{key.user[:64]}'" if key.user is not None else f"key '{key.name}'"
    if verdict in (Verdict.RPM, Verdict.TPM):
        wait = _resets_in(windows.now, _MINUTE_S)
        what = f"{policy.rpm} requests" if verdict is Verdict.RPM else f"{policy.tpm} tokens"
        return RateLimitExceededError(
            f"Rate limit reached for {who}: {what} per minute. Try again in {wait} s.",
            headers={**headers, "Retry-After": str(wait)},
        )
    wait = _resets_in(windows.now, _DAY_S)
    if verdict is Verdict.DAILY_TOKENS:
        message = f"{who[0].upper()}{who[1:]} has used its {policy.daily_tokens} tokens for today"
    else:
        message = "This deployment has used its daily token budget"
    return QuotaExceededError(
        f"{message}; the budget resets at 00:00 UTC, in {_duration(wait)}.",
        headers={**headers, "Retry-After": str(wait)},  # and x-should-retry: false
    )


_REFUSED_BY = {
    Verdict.RPM: "rpm",
    Verdict.TPM: "tpm",
    Verdict.DAILY_TOKENS: "daily_tokens",
    Verdict.GLOBAL_DAILY_TOKENS: "global_daily_tokens",
}
