"""The shared limit store: Redis (Upstash, Redis Cloud, ElastiCache, Valkey, a container).

The one place that talks to Redis (over `lib.access.redis_connection`): every error reply,
failed connection and call that outlasts its bound becomes `LimitStoreError`. Imported when a
store is configured, never by `import api.index` alone (tests/test_import_footprint.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from lib.access import redis_scripts
from lib.access.redis_connection import RedisConnection, RedisReplyError
from lib.access.redis_scripts import Script
from lib.access.stores import OTHER_USERS, AccountCounts, Counts, Verdict, Windows
from lib.access.usage import UsageWrite
from lib.errors import LimitStoreError

if TYPE_CHECKING:
    from lib.access.redis_cluster import RedisCluster

_T = TypeVar("_T")
# The longest a usage report's read may take (thousands of hours in one pipeline).
_READ_BOUND_S = 10.0
# What a node of a Redis Cluster answers a client that takes it for the whole store.
_CLUSTER_REPLIES = frozenset({"MOVED", "ASK", "CROSSSLOT"})
# A lost settlement is logged at most this often.
_LOG_EVERY_S = 60.0


class RedisStore:
    """Counts in Redis, shared by every instance; each call bounded by `timeout_s`.

    Admission waits for its script's answer; a settlement is handed to the connection before
    `add_tokens` returns and its reply read in the background (a failure is logged, at most
    once a minute), so settling costs the request no round trip. With `cluster`, commands go
    to their slot's node (`lib.access.redis_cluster`), and the deployment's day, in a slot
    of its own, costs admission a second round trip and a settlement a second command.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        logger: logging.Logger | None = None,
        cluster: bool = False,
    ) -> None:
        scripts = tuple(script.source for script in redis_scripts.ALL)
        self._connection: RedisConnection | RedisCluster
        if cluster:
            from lib.access.redis_cluster import RedisCluster

            self._connection = RedisCluster(url, scripts=scripts)
        else:
            self._connection = RedisConnection(url, scripts=scripts)
        self._cluster = cluster
        self._timeout_s = timeout_s
        self._logger = logger or logging.getLogger("promptgate")
        self._failure_logged_at = -math.inf
        # Resends of a settlement whose script the server lost, held until done.
        self._background: set[asyncio.Task[None]] = set()

    async def admit(self, windows: Windows, reserve: int, *, count: bool = True) -> Counts:
        """Run the admission script: check every limit, count and reserve if all can take it."""
        windows, global_day = self._split(windows)
        if global_day is None:
            return await self._admit(windows, reserve, count)
        # The deployment's day first, as the one script checks it first: a refusal there
        # counts nothing, and a refusal by an account gives its reserve back.
        args = [reserve, windows.global_daily_tokens, windows.day_ttl_s, 1 if count else 0]
        refused, glob = await self._bounded(
            self._run(redis_scripts.ADMIT_GLOBAL, [global_day], args)
        )
        counts = await self._admit(windows, reserve, count and not refused)
        if refused:
            return Counts(Verdict.GLOBAL_DAILY_TOKENS, -1, counts.accounts, glob)
        if count and counts.verdict is not Verdict.ADMITTED:
            await self._settle_global(global_day, -reserve, windows)
        return Counts(counts.verdict, counts.refused, counts.accounts, glob)

    async def add_tokens(self, windows: Windows, delta: int) -> None:
        """Add `delta` tokens to every window of the request (a give-back: those still held);
        returns once the command is handed to the connection (written as this step of the event
        loop ends), without waiting for Redis to answer."""
        windows, global_day = self._split(windows)
        keys = _token_keys(windows)
        args = [delta, windows.minute_ttl_s, windows.day_ttl_s, len(windows.accounts)]
        await self._send(redis_scripts.ADD_TOKENS, keys, args)
        if global_day is not None:
            await self._settle_global(global_day, delta, windows)

    async def add_usage(self, write: UsageWrite, settle: tuple[Windows, int] | None = None) -> None:
        """Add a finished request to the ledger, and settle its reservation in the same script
        when `settle` is given; returns once the command is handed over (a failure is logged,
        like a lost settlement)."""
        keys = [write.hour_key, write.users_key]
        delta, minutes, global_day = 0, 0, None
        if settle is not None:
            windows, delta = settle
            windows, global_day = self._split(windows)
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
        await self._send(redis_scripts.ADD_USAGE, keys, args)
        if global_day is not None and settle is not None:
            await self._settle_global(global_day, delta, settle[0])

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
        """Keep a response cache entry for `ttl_s`; returns once the command is handed over
        (a lost write is a later miss, nothing more)."""
        reply = await self._bounded(self._connection.send("SET", key, value, "EX", ttl_s))
        reply.add_done_callback(_consume_reply)

    async def ping(self) -> None:
        """Return when Redis answers PING within the bound."""
        await self._bounded(self._connection.execute("PING"))

    async def aclose(self) -> None:
        """Close the connection; a later call opens a new one."""
        await self._connection.aclose(drain_s=self._timeout_s)

    async def breaker_read(self, key: str, models: Sequence[str]) -> list[tuple[int, float]]:
        """Each model's failures in a row and open-until time, from the breaker's hash."""
        fields = [field for model in models for field in (f"f|{model}", f"u|{model}")]
        held = await self._bounded(self._connection.execute("HMGET", key, *fields))
        return [(int(held[i] or 0), float(held[i + 1] or 0)) for i in range(0, len(held), 2)]

    async def breaker_failed(
        self, key: str, model: str, *, threshold: int, open_until: float, ttl_s: int
    ) -> None:
        """Count a failure of `model`, opening it at `threshold` in a row (one script, sent
        whole each time: failures are rare, and no connection needs to have loaded it)."""
        args = (model, threshold, f"{open_until:.3f}", ttl_s)
        source = redis_scripts.BREAKER_FAILED.source
        await self._bounded(self._connection.execute("EVAL", source, 1, key, *args))

    async def breaker_reset(self, key: str, model: str) -> None:
        """Forget `model`'s failures and its opening."""
        await self._bounded(self._connection.execute("HDEL", key, f"f|{model}", f"u|{model}"))

    def _split(self, windows: Windows) -> tuple[Windows, str | None]:
        """On a cluster, the request's windows without the deployment's day, and that day's
        key (None when there is no cap, or it shares the one script off a cluster)."""
        if not self._cluster or windows.global_day is None:
            return windows, None
        return dataclasses.replace(windows, global_day=None), windows.global_day

    async def _admit(self, windows: Windows, reserve: int, count: bool) -> Counts:
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
        script = redis_scripts.ADMIT
        verdict, refused, glob, *held = await self._bounded(self._run(script, keys, args))
        counts = tuple(AccountCounts(*held[i : i + 3]) for i in range(0, len(held), 3))
        return Counts(Verdict(verdict), refused, counts, glob)

    async def _settle_global(self, global_day: str, delta: int, windows: Windows) -> None:
        args = [delta, windows.minute_ttl_s, windows.day_ttl_s, 0]
        await self._send(redis_scripts.ADD_TOKENS, [global_day], args)

    async def _send(self, script: Script, keys: list[str], args: list[Any]) -> None:
        """Hand `script` to the connection; its reply is read in the background."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        # Most often the connection is open: no wait, so nothing to bound.
        reply = self._connection.send_if_open(*command)
        if reply is None:
            reply = await self._bounded(self._connection.send(*command))
        reply.add_done_callback(lambda done: self._after_add(done, script, keys, args))

    async def _run(self, script: Script, keys: list[str], args: list[int]) -> Any:
        try:
            return await self._connection.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
            # A new server (a restart, a failover) has not seen the script: send it whole.
            return await self._connection.execute("EVAL", script.source, len(keys), *keys, *args)

    def _after_add(
        self, reply: asyncio.Future[Any], script: Script, keys: list[str], args: list[Any]
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

    async def _resend_add(self, script: Script, keys: list[str], args: list[Any]) -> None:
        try:
            await self._bounded(
                self._connection.execute("EVAL", script.source, len(keys), *keys, *args)
            )
        except LimitStoreError:
            self._log_lost_write(script, "NOSCRIPT, then no answer")

    def _log_lost_write(self, script: Script, reason: str) -> None:
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
            reason = exc.code
            if reason in _CLUSTER_REPLIES and not self._cluster:
                reason += ": REDIS_URL is a node of a Redis Cluster, set REDIS_CLUSTER=true"
            raise LimitStoreError(_unreachable(reason)) from exc
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
