"""When to try the upstream again: exponential backoff with full jitter, or the server's hint.

Only failures that say "try later" are retried (connect errors, 429, 502, 503, 504), and
only while the request's deadline leaves room for the wait and one more attempt.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Mapping

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The least time worth starting an attempt with; a wait that leaves less is not taken.
MIN_ATTEMPT_S = 1.0


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

    def delay_after_connect_error(self, attempt: int, remaining_s: float) -> float | None:
        """The wait before retrying a connection that failed, or None to give up."""
        return self._fit(attempt, self._backoff(attempt), remaining_s)

    def delay_after_status(
        self, attempt: int, status: int, headers: Mapping[str, str], body: bytes, remaining_s: float
    ) -> float | None:
        """The wait before retrying after `status`, or None to give up and report it.

        A `Retry-After` header (seconds or an HTTP date) or a loading model's
        `estimated_time` is honoured when it fits the deadline, and never shortened.
        """
        if status not in RETRY_STATUSES:
            return None
        hint = retry_after_seconds(headers.get("retry-after"))
        if hint is None and status == 503:
            hint = _estimated_time(body)
        return self._fit(attempt, self._backoff(attempt) if hint is None else hint, remaining_s)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._max_delay_s, self._base_delay_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def _fit(self, attempt: int, delay: float, remaining_s: float) -> float | None:
        if attempt >= self.max_attempts or delay + MIN_ATTEMPT_S > remaining_s:
            return None
        return delay


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
