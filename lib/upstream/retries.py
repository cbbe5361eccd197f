"""When to try the upstream again: exponential backoff with full jitter, or the server's hint.

Only failures that say "try later" are retried (connect errors, 429, 502, 503, 504), and
only while the request's deadline leaves room for the wait and one more attempt.
Retries happen in one place: when this proxy has made its attempts, it tells the caller's
client not to repeat them (`GiveUp.SPENT`); when it could not wait, or retries are off,
the client may retry, after the server's hint if there is one (`GiveUp.DEFERRED`).
"""

from __future__ import annotations

import email.utils
import enum
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The least time worth starting an attempt with; a wait that leaves less is not taken.
MIN_ATTEMPT_S = 1.0


class GiveUp(enum.Enum):
    """Why no further attempt is made, which decides what the caller's client is told."""

    FINAL = "final"  # a failure that trying again does not fix
    SPENT = "spent"  # this proxy made its attempts: the client should not repeat them
    DEFERRED = "deferred"  # the wait did not fit the deadline, or retries are off: client's call


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """After a failed attempt: wait `delay_s` and try again, or give up for `give_up`'s reason.

    `hint_s` is the wait the server asked for (`Retry-After`, a loading model's
    `estimated_time`), if it asked.
    """

    delay_s: float | None = None
    give_up: GiveUp | None = None
    hint_s: float | None = None


class RetryPolicy:
    """Decides, after a failed attempt, how long to wait before the next one, or not to."""

    def __init__(
        self,
        max_attempts: int,
        *,
        base_delay_s: float = 0.5,
        max_delay_s: float = 8.0,
        rng: random.Random | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._rng = rng or random.Random()

    def after_connect_error(self, attempt: int, remaining_s: float) -> RetryDecision:
        """Whether, and after how long, to retry a connection that failed."""
        return self._fit(attempt, None, remaining_s)

    def after_timeout(self) -> RetryDecision:
        """The deadline passed: the proxy spent the request's time (unless it does not retry)."""
        return RetryDecision(give_up=GiveUp.DEFERRED if self.max_attempts == 1 else GiveUp.SPENT)

    def after_status(
        self, attempt: int, status: int, headers: Mapping[str, str], body: bytes, remaining_s: float
    ) -> RetryDecision:
        """Whether, and after how long, to retry after the upstream answered `status`.

        A `Retry-After` header (seconds or an HTTP date) or a loading model's
        `estimated_time` is honoured when it fits the deadline, and never shortened.
        """
        if status not in RETRY_STATUSES:
            return RetryDecision(give_up=GiveUp.FINAL)
        hint = retry_after_seconds(headers.get("retry-after"))
        if hint is None and status == 503:
            hint = _estimated_time(body)
        return self._fit(attempt, hint, remaining_s)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._max_delay_s, self._base_delay_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def _fit(self, attempt: int, hint: float | None, remaining_s: float) -> RetryDecision:
        if self.max_attempts == 1:
            return RetryDecision(give_up=GiveUp.DEFERRED, hint_s=hint)
        if attempt >= self.max_attempts:
            return RetryDecision(give_up=GiveUp.SPENT, hint_s=hint)
        delay = self._backoff(attempt) if hint is None else hint
        if delay + MIN_ATTEMPT_S > remaining_s:
            return RetryDecision(give_up=GiveUp.DEFERRED, hint_s=hint)
        return RetryDecision(delay_s=delay, hint_s=hint)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` value, delta-seconds or HTTP date; None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _estimated_time(body: bytes) -> float | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("estimated_time") if isinstance(data, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None
