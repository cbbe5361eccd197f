"""Rate limits and token budgets: windows, admission, reservations, refusals and their headers.

Admission counts the request and reserves its worst case in tokens (the caller says how
many) on every account it is counted on, in one atomic step; a request is refused when any
limit is spent or cannot take that reserve, and then counts nowhere. When the request ends
the reservation is settled to the tokens it really used (or given back when it failed before
the upstream answered). A budget is then exceeded by at most the reserves' estimation error,
never by the number of requests in flight.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from lib.access.policy import NamedKey
from lib.access.refusals import (
    DAY_S,
    MINUTE_S,
    REFUSED_BY,
    rate_limit_headers,
    refusal,
    resets_in,
)
from lib.access.stores import (
    NO_LIMIT,
    Account,
    Counts,
    LimitStore,
    MemoryStore,
    Verdict,
    Windows,
    store_key,
)
from lib.errors import LimitStoreError

if TYPE_CHECKING:
    from lib.access.usage import UsageWrite

# After a failure, the shared store is not asked again for this long: a hung store costs
# one bounded wait every few seconds, not one per request.
_STORE_RETRY_AFTER_S = 2.0
_FAILURE_LOG_EVERY_S = 60.0
_T = TypeVar("_T")


@dataclass(slots=True)
class AccessRecord:
    """One request's dealings with the access layer, for its log line (never the key)."""

    key: str
    user: str | None = None  # the end user a token names
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    refused_by: str | None = None
    max_tokens: int | None = None  # the completion cap sent upstream (for traces)
    cache: str | None = None  # the response cache's verdict: hit, miss or bypass
    saved_tokens: int = 0  # tokens answered from the cache instead of the upstream


@dataclass(slots=True)
class Reservation:
    """The tokens held for one admitted request, in the store that admitted it."""

    windows: Windows
    store: LimitStore
    tokens: int


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
        key_prefix: str = "promptgate:",
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._local = MemoryStore(clock)
        self._prefix = key_prefix
        self._store: LimitStore = store or self._local
        self._global_daily_tokens = global_daily_tokens
        self._on_store_error = on_store_error
        self._clock = clock
        self._logger = logger or logging.getLogger("promptgate")
        self._store_retry_at = 0.0
        self._failure_logged_at = -math.inf

    @property
    def store(self) -> LimitStore:
        """The store that counts when it answers: the shared one, if configured."""
        return self._store

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

    async def admit(
        self, holders: Sequence[NamedKey], reserve: int, record: AccessRecord
    ) -> tuple[dict[str, str], Reservation | None]:
        """Count one request on every holder it applies to (a token's user first, then the
        key) and hold `reserve` tokens on each, or raise the refusal; nothing is counted when
        one refuses. Returns the rate-limit headers (the first holder's win) and the
        reservation to settle, None when no holder is counted.

        Raises `RateLimitExceededError` (minute spent), `QuotaExceededError` (day spent) or,
        with `closed`, `LimitStoreError`; `record.refused_by` names the limit.
        """
        counted = [holder for holder in holders if self.applies_to(holder)]
        if not counted:
            return {}, None
        windows = self._windows(counted)

        async def admit_in(store: LimitStore) -> tuple[LimitStore, Counts]:
            return store, await store.admit(windows, reserve)

        try:
            store, counts = await self._with_store(admit_in)
        except LimitStoreError:
            record.refused_by = "limit_store_unavailable"
            raise
        headers: dict[str, str] = {}
        for holder, held in reversed(list(zip(counted, counts.accounts, strict=True))):
            headers.update(rate_limit_headers(holder, held, windows))
        if counts.verdict is Verdict.ADMITTED:
            return headers, Reservation(windows, store, reserve)
        if counts.refused < 0:
            record.refused_by = REFUSED_BY[counts.verdict]
            raise refusal(None, counts.verdict, windows, headers, reserve, counts)
        holder = counted[counts.refused]
        prefix = "user_" if holder.user is not None else ""
        record.refused_by = prefix + REFUSED_BY[counts.verdict]
        raise refusal(holder, counts.verdict, windows, headers, reserve, counts)

    async def settle(self, reservation: Reservation, tokens: int) -> None:
        """Replace the tokens held by `reservation` with `tokens`, the request's real count
        (0 gives them all back), in the store that admitted it.

        Never raises: the answer is already made. A failing store is logged.
        """
        delta = max(tokens, 0) - reservation.tokens
        reservation.tokens += delta
        if delta:
            await self._add_tokens(reservation, delta)

    async def _add_tokens(self, reservation: Reservation, delta: int) -> None:
        try:
            await reservation.store.add_tokens(reservation.windows, delta)
        except LimitStoreError as exc:
            # With nothing left to refuse, the failure is logged, and that is all.
            self._log_store_failure(exc)

    async def remaining(self, holders: Sequence[NamedKey]) -> list[Remaining]:
        """What each holder has left this minute and today, without counting a request."""
        windows = self._windows(holders)
        counts = await self._with_store(lambda store: store.admit(windows, 0, count=False))
        return [
            Remaining(
                requests_this_minute=_left(holder.policy.rpm, held.requests),
                tokens_this_minute=_left(holder.policy.tpm, held.minute_tokens),
                tokens_today=_left(holder.policy.daily_tokens, held.day_tokens),
                deployment_tokens_today=_left(
                    self._global_daily_tokens if holder.user is None else None,
                    counts.global_day_tokens,
                ),
                minute_resets_in_s=resets_in(windows.now, MINUTE_S),
                day_resets_in_s=resets_in(windows.now, DAY_S),
            )
            for holder, held in zip(holders, counts.accounts, strict=True)
        ]

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

    async def record_usage(
        self, write: UsageWrite, settlement: tuple[Reservation, int] | None = None
    ) -> None:
        """Add a finished request to the usage ledger, on the shared store or, while it fails
        or rests, this process's; `settlement` (a reservation and its real count) rides in
        the same store call when the reservation was made in that store. Never raises."""
        reservation, delta = None, 0
        if settlement is not None:
            reservation, tokens = settlement
            delta = max(tokens, 0) - reservation.tokens
            reservation.tokens += delta
        shared = self._store is not self._local and time.monotonic() >= self._store_retry_at
        store = self._store if shared else self._local
        settle = None
        if reservation is not None and delta:
            if reservation.store is store:
                settle = (reservation.windows, delta)
            else:  # admitted in the other store: settled there, on its own
                await self._add_tokens(reservation, delta)
        try:
            await store.add_usage(write, settle)
            return
        except LimitStoreError as exc:
            self._store_retry_at = time.monotonic() + _STORE_RETRY_AFTER_S
            self._log_store_failure(exc)
        await self._local.add_usage(write)

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

    def _windows(self, holders: Sequence[NamedKey]) -> Windows:
        now = self._clock()
        minute, day = int(now // MINUTE_S), int(now // DAY_S)  # day: since 1970-01-01, UTC
        counts_deployment = self._global_daily_tokens is not None and any(
            holder.user is None for holder in holders
        )
        return Windows(
            accounts=tuple(
                Account(
                    minute=f"{store_key(self._prefix, holder.name)}:m:{minute}",
                    day=f"{store_key(self._prefix, holder.name)}:d:{day}",
                    rpm=holder.policy.rpm or NO_LIMIT,
                    tpm=holder.policy.tpm or NO_LIMIT,
                    daily_tokens=holder.policy.daily_tokens or NO_LIMIT,
                )
                for holder in holders
            ),
            global_day=f"{self._prefix}{{*}}:d:{day}" if counts_deployment else None,
            global_daily_tokens=(self._global_daily_tokens or NO_LIMIT)
            if counts_deployment
            else NO_LIMIT,
            minute_ttl_s=2 * MINUTE_S,
            day_ttl_s=2 * DAY_S,
            now=now,
        )


def nearest_limit(
    holders: Sequence[tuple[NamedKey, Remaining]], completion_cap: int | None = None
) -> NamedKey | None:
    """Of the holders a request is counted on, the one nearer to refusing: the smallest share
    left of any of its limits (the first on a tie), a token limit's share counting only what
    is left beyond one capped answer (admission reserves it); None when no limit applies."""
    nearest, least = None, math.inf
    held = completion_cap or 0
    for holder, left in holders:
        policy = holder.policy
        pairs = (
            (policy.rpm, left.requests_this_minute, 0),
            (policy.tpm, left.tokens_this_minute, held),
            (policy.daily_tokens, left.tokens_today, held),
        )
        for limit, remaining, reserved in pairs:
            if limit and remaining is not None:
                share = max(remaining - reserved, 0) / limit
                if share < least:
                    nearest, least = holder, share
    return nearest


def _left(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(limit - used, 0)
