"""The shared limit store: Redis (Upstash, Redis Cloud, ElastiCache, Valkey, a container).

The one place that talks to Redis: every redis-py error, and every call that outlasts its
bound, becomes `LimitStoreError`. redis-py is imported when a store is configured, never by
`import api.index` alone (tests/test_import_footprint.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lib.access.stores import AccountCounts, Counts, Verdict, Windows
from lib.errors import LimitStoreError

# Check every limit against the reserve and, when all can take it, count the request and hold
# the reserve on every account and the deployment's day: atomic, one round trip.
# KEYS: per account its minute hash (r: requests, t: tokens) and its day; then, optionally,
# the deployment's day. ARGV: accounts, reserve, global daily, minute TTL, day TTL, count (1)
# or only read (0), then per account rpm, tpm, daily (-1: none).
_ADMIT = """
local n, reserve, gdaily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function full(limit, used)
  return limit >= 0 and (used >= limit or used + reserve > limit)
end
local req, tok, day = {}, {}, {}
for i = 1, n do
  local m = redis.call('HMGET', KEYS[2 * i - 1], 'r', 't')
  req[i], tok[i] = tonumber(m[1]) or 0, tonumber(m[2]) or 0
  day[i] = tonumber(redis.call('GET', KEYS[2 * i])) or 0
end
local gkey = KEYS[2 * n + 1]
local glob = 0
if gkey then glob = tonumber(redis.call('GET', gkey)) or 0 end
local verdict, refused = 0, -1
if full(gdaily, glob) then verdict = 1 else
  for i = 1, n do
    local a = 6 + 3 * (i - 1)
    local rpm, tpm, daily = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    if full(daily, day[i]) then verdict = 2
    elseif full(tpm, tok[i]) then verdict = 3
    elseif rpm >= 0 and req[i] >= rpm then verdict = 4 end
    if verdict > 0 then refused = i - 1; break end
  end
end
if verdict == 0 and ARGV[6] == '1' then
  for i = 1, n do
    req[i] = redis.call('HINCRBY', KEYS[2 * i - 1], 'r', 1)
    tok[i] = redis.call('HINCRBY', KEYS[2 * i - 1], 't', reserve)
    redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[4])
    day[i] = redis.call('INCRBY', KEYS[2 * i], reserve)
    redis.call('EXPIRE', KEYS[2 * i], ARGV[5])
  end
  if gkey then
    glob = redis.call('INCRBY', gkey, reserve)
    redis.call('EXPIRE', gkey, ARGV[5])
  end
end
local out = {verdict, refused, glob}
for i = 1, n do
  local j = 3 * i
  out[j + 1] = req[i]
  out[j + 2] = tok[i]
  out[j + 3] = day[i]
end
return out
"""

# Add tokens (negative: give a reserve back) to every window; a give-back skips a window that
# has expired. KEYS: the accounts' minute hashes, then their days and the deployment's day.
# ARGV: delta, minute TTL, day TTL, accounts.
_ADD_TOKENS = """
local delta, n = tonumber(ARGV[1]), tonumber(ARGV[4])
for i = 1, #KEYS do
  if delta >= 0 or redis.call('EXISTS', KEYS[i]) == 1 then
    if i <= n then
      redis.call('HINCRBY', KEYS[i], 't', delta)
      redis.call('EXPIRE', KEYS[i], ARGV[2])
    else
      redis.call('INCRBY', KEYS[i], delta)
      redis.call('EXPIRE', KEYS[i], ARGV[3])
    end
  end
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

    async def admit(self, windows: Windows, reserve: int, *, count: bool = True) -> Counts:
        """Run the admission script: check every limit, count and reserve if all can take it."""
        admit, _ = self._scripts_for_loop()
        accounts = windows.accounts
        keys = [key for account in accounts for key in (account.minute, account.day)]
        if windows.global_day:
            keys.append(windows.global_day)
        args = [
            len(accounts),
            reserve,
            windows.global_daily_tokens,
            windows.minute_ttl_s,
            windows.day_ttl_s,
            1 if count else 0,
        ]
        args += [limit for a in accounts for limit in (a.rpm, a.tpm, a.daily_tokens)]
        verdict, refused, glob, *held = (
            int(n) for n in await self._bounded(admit(keys=keys, args=args))
        )
        counts = tuple(AccountCounts(*held[i : i + 3]) for i in range(0, len(held), 3))
        return Counts(Verdict(verdict), refused, counts, glob)

    async def add_tokens(self, windows: Windows, delta: int) -> None:
        """Add `delta` tokens to every window of the request (a give-back: those still held)."""
        _, add = self._scripts_for_loop()
        keys = [a.minute for a in windows.accounts] + [a.day for a in windows.accounts]
        if windows.global_day:
            keys.append(windows.global_day)
        args = [delta, windows.minute_ttl_s, windows.day_ttl_s, len(windows.accounts)]
        await self._bounded(add(keys=keys, args=args))

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
