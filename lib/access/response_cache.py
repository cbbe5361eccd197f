"""The response cache's entries: kept in the limit store (Redis, when configured), else in a
least-recently-used table in this process bounded by `CACHE_MAX_BYTES`.

An entry is the answer as JSON, with the time it was kept (for `age`); one larger than
`CACHE_MAX_ENTRY_BYTES` is not kept. The store's failures never reach the request: a read
that fails or outlasts the limit store's bound (`LIMITS_STORE_TIMEOUT_S`) is a miss, and the
store then rests a moment, so a hung store costs one bounded wait every few seconds, not one
per request. Imported only when some caller's answers are cached (tests/test_import_footprint.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lib.errors import LimitStoreError

# After a failure the shared store is not asked again for this long (as the limiter does).
_REST_AFTER_FAILURE_S = 2.0
_LOG_EVERY_S = 60.0


class CacheStore(Protocol):
    """Where entries are kept; the Redis store raises `LimitStoreError` when it fails."""

    kind: str

    async def cache_get(self, keys: list[str]) -> list[bytes | None]:
        """The entry under each of `keys`, None for one not held (or expired)."""
        ...

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        """Keep `value` under `key` for `ttl_s` seconds."""
        ...


class MemoryCache:
    """Entries in this process, the least recently used dropped first beyond `max_bytes`."""

    kind = "memory"

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        self._bytes = 0
        # key -> (expires at, value); the order is the use order, oldest first.
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        """The bytes of every value held."""
        return self._bytes

    async def cache_get(self, keys: list[str]) -> list[bytes | None]:
        """Each entry still alive, marked as just used."""
        now = self._clock()
        found: list[bytes | None] = []
        for key in keys:
            held = self._entries.get(key)
            if held is not None and held[0] <= now:
                self._drop(key)
                held = None
            if held is not None:
                self._entries.move_to_end(key)
            found.append(held[1] if held else None)
        return found

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        """Keep `value`, dropping the least recently used entries until it fits."""
        if len(value) > self._max_bytes:
            return
        self._drop(key)
        self._entries[key] = (self._clock() + ttl_s, value)
        self._bytes += len(value)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        held = self._entries.pop(key, None)
        if held is not None:
            self._bytes -= len(held[1])


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer from the cache: what was kept, and how many seconds ago."""

    body: Any
    age_s: int


class ResponseCache:
    """Reads and keeps answers in one store; never raises for the store's failures."""

    def __init__(
        self,
        store: CacheStore,
        *,
        max_entry_bytes: int,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._store = store
        self._max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._logger = logger or logging.getLogger("promptgate")
        self._rest_until = 0.0
        self._failure_logged_at = -math.inf

    @property
    def store_kind(self) -> str:
        """`memory` or `redis`."""
        return self._store.kind

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer kept under `key`, or None (not held, unreadable, or the store failed)."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: list[str]) -> list[CachedAnswer | None]:
        """The answer kept under each of `keys` (one store call), None where there is none."""
        if not keys or time.monotonic() < self._rest_until:
            return [None] * len(keys)
        try:
            values = await self._store.cache_get(keys)
        except LimitStoreError as exc:
            self._failed(exc)
            return [None] * len(keys)
        now = self._clock()
        return [_decode(value, now) if value is not None else None for value in values]

    async def put(self, key: str, body: Any, ttl_s: int) -> bool:
        """Keep `body` (JSON-encodable) for `ttl_s`; False when it is larger than an entry may
        be, or the store failed."""
        return await self.put_many([(key, body)], ttl_s) == 1

    async def put_many(self, entries: list[tuple[str, Any]], ttl_s: int) -> int:
        """Keep each `(key, body)` for `ttl_s`; the number kept."""
        if time.monotonic() < self._rest_until:
            return 0
        now, kept = self._clock(), 0
        for key, body in entries:
            value = json.dumps({"at": now, "body": body}, separators=(",", ":")).encode()
            if len(value) > self._max_entry_bytes:
                continue
            try:
                await self._store.cache_put(key, value, ttl_s)
            except LimitStoreError as exc:
                self._failed(exc)
                break
            kept += 1
        return kept

    def _failed(self, exc: LimitStoreError) -> None:
        self._rest_until = time.monotonic() + _REST_AFTER_FAILURE_S
        now = time.monotonic()
        if now - self._failure_logged_at >= _LOG_EVERY_S:
            self._failure_logged_at = now
            event = {
                "event": "cache_store_failed",
                "store": self._store.kind,
                "error": exc.message,
                "action": "answering from the upstream (a miss)",
            }
            self._logger.warning(json.dumps(event, separators=(",", ":")))


def _decode(value: bytes, now: float) -> CachedAnswer | None:
    """The entry `value` holds, None for one that is not an entry (never an error)."""
    try:
        entry = json.loads(value)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("at"), int | float):
        return None
    return CachedAnswer(entry.get("body"), max(int(now - entry["at"]), 0))
