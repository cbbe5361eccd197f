"""The shared limit store: Redis (Upstash, Redis Cloud, ElastiCache, Valkey, a container).

The one place that talks to Redis: every redis-py error, and every call that outlasts its
bound, becomes `LimitStoreError`. redis-py is imported when a store is configured, never by
`import api.index` alone (tests/test_import_footprint.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lib.access.stores import Counts, Limits, Verdict, Windows
from lib.errors import LimitStoreError

# Check every limit and, when none is spent, count the request: atomic, one round trip.
# KEYS: minute hash (r: requests, t: tokens), key's day, deployment's day (optional).
# ARGV: rpm, tpm, daily, global daily (-1: none), minute TTL, count (1) or only read (0).
_ADMIT = """
local m = redis.call('HMGET', KEYS[1], 'r', 't')
local req = tonumber(m[1]) or 0
local tok = tonumber(m[2]) or 0
local day = tonumber(redis.call('GET', KEYS[2])) or 0
local glob = 0
if #KEYS > 2 then glob = tonumber(redis.call('GET', KEYS[3])) or 0 end
local rpm, tpm, daily, gdaily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local verdict = 0
if gdaily >= 0 and glob >= gdaily then verdict = 1
elseif daily >= 0 and day >= daily then verdict = 2
elseif tpm >= 0 and tok >= tpm then verdict = 3
elseif rpm >= 0 and req >= rpm then verdict = 4
elseif ARGV[6] == '1' then
  req = redis.call('HINCRBY', KEYS[1], 'r', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return {verdict, req, tok, day, glob}
"""

# Add a request's tokens to its windows. ARGV: tokens, minute TTL, day TTL.
_ADD_TOKENS = """
redis.call('HINCRBY', KEYS[1], 't', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 2, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
"""


class RedisStore:
    """Counts in Redis, shared by every instance; each call bounded by `timeout_s`.

    The connection pool is bound to the event loop that first uses it; a new loop (a test,
    a runtime that replaced its loop) gets a new pool, as the upstream client does.
    """

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._client: Any = None
        self._scripts: tuple[Any, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def admit(self, windows: Windows, limits: Limits, *, count: bool = True) -> Counts:
        """Run the admission script: check every limit, count the request if none is spent."""
        admit, _ = self._scripts_for_loop()
        keys = [windows.minute, windows.day]
        if windows.global_day:
            keys.append(windows.global_day)
        args = [
            limits.rpm,
            limits.tpm,
            limits.daily_tokens,
            limits.global_daily_tokens,
            windows.minute_ttl_s,
            1 if count else 0,
        ]
        verdict, *counts = await self._bounded(admit(keys=keys, args=args))
        return Counts(Verdict(int(verdict)), *(int(c) for c in counts))

    async def add_tokens(self, windows: Windows, tokens: int) -> None:
        """Add `tokens` to the request's minute, its key's day and the deployment's day."""
        _, add = self._scripts_for_loop()
        keys = [windows.minute, windows.day]
        if windows.global_day:
            keys.append(windows.global_day)
        await self._bounded(add(keys=keys, args=[tokens, windows.minute_ttl_s, windows.day_ttl_s]))

    async def ping(self) -> None:
        """Return when Redis answers PING within the bound."""
        self._scripts_for_loop()
        await self._bounded(self._client.ping())

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        client, self._client, self._scripts, self._loop = self._client, None, None, None
        if client is not None:
            await client.aclose()

    async def _bounded(self, operation: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self._timeout_s):
                return await operation
        except TimeoutError as exc:
            raise LimitStoreError(_unreachable("did not answer in time")) from exc
        except (RedisError, OSError) as exc:
            raise LimitStoreError(_unreachable(type(exc).__name__)) from exc

    def _scripts_for_loop(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        if self._scripts is None or self._loop is not loop:
            # Imported here: only deployments with a store pay for redis-py (~110 ms).
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                # One attempt: a retry would outlast the bound; the limiter decides what next.
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
                # No CLIENT SETINFO on each new connection: two round trips fewer.
                driver_info=None,
            )
            self._scripts = (
                self._client.register_script(_ADMIT),
                self._client.register_script(_ADD_TOKENS),
            )
            self._loop = loop
        return self._scripts


def _unreachable(reason: str) -> str:
    # Never the URL: it holds the store's password.
    return f"The limit store is unreachable ({reason}); try again shortly."
