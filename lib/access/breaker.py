"""The circuit breaker of model fallbacks: a model that keeps failing is skipped for a while.

After `FALLBACK_BREAKER_FAILURES` failures in a row (429, 5xx, a failed connection or a
timeout), a model is open for `FALLBACK_BREAKER_COOLDOWN_S`: requests go straight to its
fallbacks. Once the cooldown is over, one request tries it again (half-open): a success
closes it, one more failure opens it for another cooldown. Only models in a fallback chain
are watched, so a deployment without fallbacks never asks the store.

The state is kept where the limits are: one Redis hash shared by every instance (fields
`f|<model>`, failures in a row, and `u|<model>`, open until, Unix seconds), or this process.
A store that fails or is slow is treated as "every model closed", never as a failed request.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lib.errors import LimitStoreError

# The breaker's hash forgets a model left alone this long (a day): no count lives forever.
_STATE_TTL_S = 86_400
# After a failure, the shared store is not asked again for this long (as the limiter does).
_STORE_RETRY_AFTER_S = 2.0
_FAILURE_LOG_EVERY_S = 60.0


class BreakerStore(Protocol):
    """Where breaker state is kept; the Redis store raises `LimitStoreError` when it fails."""

    async def breaker_read(self, key: str, models: Sequence[str]) -> list[tuple[int, float]]:
        """Each model's failures in a row and the time it is open until (0: never opened)."""
        ...

    async def breaker_failed(
        self, key: str, model: str, *, threshold: int, open_until: float, ttl_s: int
    ) -> None:
        """Count one failure of `model`; at `threshold` in a row, open it until `open_until`
        and leave its count one short of the threshold (so one failure reopens it)."""
        ...

    async def breaker_reset(self, key: str, model: str) -> None:
        """Forget `model`'s failures: it answered."""
        ...


class MemoryBreakerStore:
    """Breaker state in this process: exact for one instance, per instance where many run."""

    def __init__(self) -> None:
        # model -> [failures in a row, open until]; bounded by the models in fallback chains.
        self._models: dict[str, list[float]] = {}

    async def breaker_read(self, key: str, models: Sequence[str]) -> list[tuple[int, float]]:
        """Each model's failures in a row and open-until time."""
        held = [self._models.get(model, [0, 0.0]) for model in models]
        return [(int(failures), until) for failures, until in held]

    async def breaker_failed(
        self, key: str, model: str, *, threshold: int, open_until: float, ttl_s: int
    ) -> None:
        """Count a failure, opening the model at `threshold` in a row."""
        state = self._models.setdefault(model, [0, 0.0])
        state[0] += 1
        if state[0] >= threshold:
            state[0], state[1] = threshold - 1, open_until

    async def breaker_reset(self, key: str, model: str) -> None:
        """Forget the model's failures."""
        self._models.pop(model, None)


@dataclass(frozen=True, slots=True)
class BreakerReading:
    """The breaker as one request found it: the models open now, and those with failures."""

    open: frozenset[str]
    failing: frozenset[str]


class Breaker:
    """Counts each watched model's failures in a row, and says which models are open now."""

    def __init__(
        self,
        store: BreakerStore | None = None,
        *,
        failures: int,
        cooldown_s: float,
        key_prefix: str = "promptgate:",
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._store: BreakerStore = store or MemoryBreakerStore()
        self._shared = store is not None
        self._threshold = failures
        self._cooldown_s = cooldown_s
        # One hash for every model, in one Cluster slot: a chain is read in one HMGET.
        # "~" is in no key's name (policy.py), so this never meets a caller's keys.
        self._key = f"{key_prefix}{{~fallbacks}}:breaker"
        self._clock = clock
        self._logger = logger or logging.getLogger("promptgate")
        self._store_retry_at = 0.0
        self._failure_logged_at = -math.inf

    async def read(self, models: Sequence[str]) -> BreakerReading:
        """Which of `models` are open now, and which have failed lately; all closed when the
        store fails."""
        if not self._store_answers_now():
            return BreakerReading(frozenset(), frozenset())
        try:
            held = await self._store.breaker_read(self._key, models)
        except LimitStoreError as exc:
            self._store_failed(exc)
            return BreakerReading(frozenset(), frozenset())
        now = self._clock()
        return BreakerReading(
            open=frozenset(m for m, (_, until) in zip(models, held, strict=True) if until > now),
            failing=frozenset(m for m, (count, _) in zip(models, held, strict=True) if count),
        )

    async def failed(self, model: str) -> None:
        """Count one failure of `model` (it may open); a store failure is logged, no more."""
        if not self._store_answers_now():
            return
        try:
            await self._store.breaker_failed(
                self._key,
                model,
                threshold=self._threshold,
                open_until=self._clock() + self._cooldown_s,
                ttl_s=_STATE_TTL_S,
            )
        except LimitStoreError as exc:
            self._store_failed(exc)

    async def succeeded(self, model: str) -> None:
        """`model` answered: its failures are forgotten (callers do this only for a model
        the reading found failing, so a healthy model costs no write)."""
        if not self._store_answers_now():
            return
        try:
            await self._store.breaker_reset(self._key, model)
        except LimitStoreError as exc:
            self._store_failed(exc)

    def _store_answers_now(self) -> bool:
        return not self._shared or time.monotonic() >= self._store_retry_at

    def _store_failed(self, exc: LimitStoreError) -> None:
        self._store_retry_at = time.monotonic() + _STORE_RETRY_AFTER_S
        now = time.monotonic()
        if now - self._failure_logged_at < _FAILURE_LOG_EVERY_S:
            return
        self._failure_logged_at = now
        event = {
            "event": "limit_store_failed",
            "store": "redis",
            "error": exc.message,
            "action": "fallback breakers treated as closed",
        }
        self._logger.warning(json.dumps(event, separators=(",", ":")))
