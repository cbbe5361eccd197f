"""The shared limit store: Redis (Upstash, Redis Cloud, ElastiCache, Valkey, a container).

The one place that talks to Redis (over `lib.access.redis_connection`): every error reply,
failed connection and call that outlasts its bound becomes `LimitStoreError`. Imported when a
store is configured, never by `import api.index` alone (tests/test_import_footprint.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from lib.access.redis_connection import RedisConnection, RedisReplyError
from lib.access.stores import OTHER_USERS, AccountCounts, Counts, Verdict, Windows
from lib.access.usage import UsageWrite
from lib.errors import LimitStoreError

# Check every limit against the reserve and, when all can take it, count the request and hold
# the reserve on every account and the deployment's day: atomic, one round trip.
# KEYS: per account its minute hash (r: requests, t: tokens) and its day; then, optionally,
# the deployment's day. ARGV: accounts, reserve, global daily, minute TTL, day TTL, count (1)
# or only read (0), then per account rpm, tpm, daily (-1: none).
_ADMIT_SOURCE = """
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
_SETTLE_FUNCTION = """
local function settle(first, delta, minute_ttl, day_ttl, minutes)
  for i = first, #KEYS do
    if delta >= 0 or redis.call('EXISTS', KEYS[i]) == 1 then
      if i - first < minutes then
        redis.call('HINCRBY', KEYS[i], 't', delta)
        redis.call('EXPIRE', KEYS[i], minute_ttl)
      else
        redis.call('INCRBY', KEYS[i], delta)
        redis.call('EXPIRE', KEYS[i], day_ttl)
      end
    end
  end
end
"""
_ADD_TOKENS_SOURCE = (
    _SETTLE_FUNCTION
    + """
settle(1, tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
"""
)

# Add one finished request to its key's hour (lib/access/usage.py): its user by name while the
# day's set has room, else under the overflow value; and, riding along, settle its reservation
# (as _ADD_TOKENS does). KEYS: the hour's hash, the day's users, then the windows to settle
# (minute hashes first). ARGV: TTL, users kept, user ('' for none), overflow value, d
# prefixes, p metric pairs, delta, minute TTL, day TTL, minute hashes, then the d field
# prefixes and the p metric/value pairs.
_ADD_USAGE_SOURCE = (
    _SETTLE_FUNCTION
    + """
local ttl, cap, user = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local d, p = tonumber(ARGV[5]), tonumber(ARGV[6])
settle(3, tonumber(ARGV[7]), ARGV[8], ARGV[9], tonumber(ARGV[10]))
local prefixes = {}
for i = 1, d do prefixes[i] = ARGV[10 + i] end
if user ~= '' then
  if redis.call('SISMEMBER', KEYS[2], user) == 0 then
    if redis.call('SCARD', KEYS[2]) < cap then
      redis.call('SADD', KEYS[2], user)
      redis.call('EXPIRE', KEYS[2], ttl)
    else
      user = ARGV[4]
    end
  end
  prefixes[d + 1] = 'u|' .. user .. '|'
end
local first = 11 + d
for j = first, first + 2 * p - 1, 2 do
  for i = 1, #prefixes do
    redis.call('HINCRBY', KEYS[1], prefixes[i] .. ARGV[j], ARGV[j + 1])
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""
)

_T = TypeVar("_T")
# The longest a usage report's read may take (thousands of hours in one pipeline).
_READ_BOUND_S = 10.0
# A lost settlement is logged at most this often.
_LOG_EVERY_S = 60.0


class _Script:
    """A Lua script and its SHA-1, which EVALSHA names it by."""

    __slots__ = ("lost", "sha", "source")

    def __init__(self, source: str, lost: str = "") -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.lost = lost  # what a lost reply of a script sent unawaited leaves undone


_ADMIT = _Script(_ADMIT_SOURCE)
_ADD_TOKENS = _Script(_ADD_TOKENS_SOURCE, "a request's token count was not settled")
_ADD_USAGE = _Script(
    _ADD_USAGE_SOURCE, "a request was not added to the usage ledger, nor its tokens settled"
)


class RedisStore:
    """Counts in Redis, shared by every instance; each call bounded by `timeout_s`.

    Admission waits for its script's answer; a settlement is handed to the connection before
    `add_tokens` returns and its reply read in the background (a failure is logged, at most
    once a minute), so settling costs the request no round trip.
    """

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float, logger: logging.Logger | None = None) -> None:
        self._connection = RedisConnection(
            url, scripts=(_ADMIT.source, _ADD_TOKENS.source, _ADD_USAGE.source)
        )
        self._timeout_s = timeout_s
        self._logger = logger or logging.getLogger("promptgate")
        self._failure_logged_at = -math.inf
        # Resends of a settlement whose script the server lost, held until done.
        self._background: set[asyncio.Task[None]] = set()

    async def admit(self, windows: Windows, reserve: int, *, count: bool = True) -> Counts:
        """Run the admission script: check every limit, count and reserve if all can take it."""
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
        verdict, refused, glob, *held = await self._bounded(self._run(_ADMIT, keys, args))
        counts = tuple(AccountCounts(*held[i : i + 3]) for i in range(0, len(held), 3))
        return Counts(Verdict(verdict), refused, counts, glob)

    async def add_tokens(self, windows: Windows, delta: int) -> None:
        """Add `delta` tokens to every window of the request (a give-back: those still held);
        returns once the command is sent, without waiting for Redis to answer."""
        keys = _token_keys(windows)
        args = [delta, windows.minute_ttl_s, windows.day_ttl_s, len(windows.accounts)]
        reply = await self._bounded(
            self._connection.send("EVALSHA", _ADD_TOKENS.sha, len(keys), *keys, *args)
        )
        reply.add_done_callback(lambda done: self._after_add(done, _ADD_TOKENS, keys, args))

    async def add_usage(self, write: UsageWrite, settle: tuple[Windows, int] | None = None) -> None:
        """Add a finished request to the ledger, and settle its reservation in the same script
        when `settle` is given; returns once the command is sent (a failure is logged, like a
        lost settlement)."""
        keys = [write.hour_key, write.users_key]
        delta, minutes = 0, 0
        if settle is not None:
            windows, delta = settle
            keys += _token_keys(windows)
            minutes = len(windows.accounts)
        metrics = [item for pair in write.metrics.items() for item in pair]
        args: list[str | int] = [
            write.ttl_s,
            write.max_users,
            write.user,
            OTHER_USERS,
            len(write.dimensions),
            len(write.metrics),
            delta,
            settle[0].minute_ttl_s if settle else 0,
            settle[0].day_ttl_s if settle else 0,
            minutes,
            *write.dimensions,
            *metrics,
        ]
        reply = await self._bounded(
            self._connection.send("EVALSHA", _ADD_USAGE.sha, len(keys), *keys, *args)
        )
        reply.add_done_callback(lambda done: self._after_add(done, _ADD_USAGE, keys, args))

    async def read_hours(self, keys: list[str]) -> list[dict[str, int]]:
        """Every field of each hour hash in `keys`, in one pipelined write."""
        commands: list[tuple[str | int | bytes, ...]] = [("HGETALL", key) for key in keys]
        # A report reads up to USAGE_RETENTION_DAYS of hours per key: not a request's bound.
        replies = await self._bounded(self._connection.execute_many(commands), _READ_BOUND_S)
        return [
            {reply[i].decode(): int(reply[i + 1]) for i in range(0, len(reply), 2)}
            for reply in replies
        ]

    async def cache_get(self, keys: list[str]) -> list[bytes | None]:
        """The response cache's entries under `keys` (lib/access/response_cache.py), in one
        MGET: the keys share one hash tag (a key's, or the deployment's cache tag)."""
        return await self._bounded(self._connection.execute("MGET", *keys))

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        """Keep a response cache entry for `ttl_s`; returns once the command is sent (a lost
        write is a later miss, nothing more)."""
        reply = await self._bounded(self._connection.send("SET", key, value, "EX", ttl_s))
        reply.add_done_callback(_consume_reply)

    async def ping(self) -> None:
        """Return when Redis answers PING within the bound."""
        await self._bounded(self._connection.execute("PING"))

    async def aclose(self) -> None:
        """Close the connection; a later call opens a new one."""
        await self._connection.aclose(drain_s=self._timeout_s)

    async def _run(self, script: _Script, keys: list[str], args: list[int]) -> Any:
        try:
            return await self._connection.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
            # A new server (a restart, a failover) has not seen the script: send it whole.
            return await self._connection.execute("EVAL", script.source, len(keys), *keys, *args)

    def _after_add(
        self, reply: asyncio.Future[Any], script: _Script, keys: list[str], args: list[Any]
    ) -> None:
        if reply.cancelled():
            return
        error = reply.exception()
        if isinstance(error, RedisReplyError) and error.code == "NOSCRIPT":
            resend = self._resend_add(script, keys, args)
            task = asyncio.get_running_loop().create_task(resend)
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif error is not None:
            self._log_lost_write(script, type(error).__name__)

    async def _resend_add(self, script: _Script, keys: list[str], args: list[Any]) -> None:
        try:
            await self._bounded(
                self._connection.execute("EVAL", script.source, len(keys), *keys, *args)
            )
        except LimitStoreError:
            self._log_lost_write(script, "NOSCRIPT, then no answer")

    def _log_lost_write(self, script: _Script, reason: str) -> None:
        now = time.monotonic()
        if now - self._failure_logged_at < _LOG_EVERY_S:
            return
        self._failure_logged_at = now
        event = {
            "event": "limit_store_failed",
            "store": self.kind,
            "error": _unreachable(reason),
            "action": script.lost,
        }
        self._logger.warning(json.dumps(event, separators=(",", ":")))

    async def _bounded(self, operation: Awaitable[_T], bound_s: float | None = None) -> _T:
        try:
            async with asyncio.timeout(bound_s or self._timeout_s):
                return await operation
        except TimeoutError as exc:
            # What the connection holds now is unknown (a frozen server): start afresh.
            self._connection.reset()
            raise LimitStoreError(_unreachable("did not answer in time")) from exc
        except RedisReplyError as exc:
            raise LimitStoreError(_unreachable(exc.code)) from exc
        except OSError as exc:  # ConnectionError included
            raise LimitStoreError(_unreachable(type(exc).__name__)) from exc


def _consume_reply(reply: asyncio.Future[Any]) -> None:
    # Read the outcome so that a failed write is not reported as an unretrieved exception.
    if not reply.cancelled():
        reply.exception()


def _token_keys(windows: Windows) -> list[str]:
    """The windows a settlement adds to: the accounts' minute hashes, then their days and the
    deployment's day."""
    keys = [a.minute for a in windows.accounts] + [a.day for a in windows.accounts]
    if windows.global_day:
        keys.append(windows.global_day)
    return keys


def _unreachable(reason: str) -> str:
    # Never the URL: it holds the store's password.
    return f"The limit store is unreachable ({reason}); try again shortly."
