"""A Redis Cluster reached through one of its nodes (`REDIS_CLUSTER=true`): each command goes
to the node that serves its first key's slot, over that node's own pipelined connection
(`lib.access.redis_connection`, with the URL's credentials).

The slot map is read with CLUSTER SLOTS on first use. A `MOVED` reply (the slot is served
elsewhere now: a resharding or a failover) corrects the map and sends the command again to
the node named; an `ASK` reply (the slot is being migrated) sends it there once, after
ASKING; `TRYAGAIN` (a migration splits the command's keys for a moment) sends it again
shortly. A node that cannot be reached leaves the map stale, and the next command reads it
again. A server with cluster support disabled is taken as the one node of every slot.

Errors are the connection's: `RedisReplyError`, `ConnectionError` or `OSError`; the store
bounds every call and turns them into `LimitStoreError`.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit

from lib.access.redis_connection import (
    IDLE_CHECK_S,
    RedisConnection,
    RedisReplyError,
    gather_replies,
)

SLOTS = 16384
# A command redirected (or told to try again) more often than this is failed.
_MAX_REDIRECTS = 10
# TRYAGAIN: the keys of a multi-key command are split by a slot's migration, for a moment.
_TRY_AGAIN_S = 0.05
_REDIRECTS = frozenset({"MOVED", "ASK", "TRYAGAIN"})
_KEYLESS = frozenset({"PING", "SCRIPT", "CLUSTER", "ASKING", "INFO"})

Address = tuple[str, int]
Command = tuple[str | int | bytes, ...]
_T = TypeVar("_T")


def key_slot(key: str | bytes) -> int:
    """The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first
    `{` and the next `}`, when not empty) or of the whole key, modulo 16384."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


def first_key(command: Command) -> str | bytes | None:
    """The key a command is routed by (EVAL and EVALSHA: their first key), None for none."""
    name = str(command[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return command[3] if int(command[2]) > 0 else None  # type: ignore[return-value]
    if name in _KEYLESS or len(command) < 2:
        return None
    return command[1]  # type: ignore[return-value]


class RedisCluster:
    """The nodes of the cluster that `url` names one of, with the interface of
    `RedisConnection`: commands sent to their slot's node, redirections followed."""

    def __init__(
        self, url: str, *, scripts: tuple[str, ...] = (), idle_check_s: float = IDLE_CHECK_S
    ) -> None:
        parts = urlsplit(url)
        self._url = url
        self._scripts = scripts
        self._idle_check_s = idle_check_s
        self._seed: Address = (parts.hostname or "localhost", parts.port or 6379)
        self._nodes: dict[Address, RedisConnection] = {}
        self._slots: list[Address | None] | None = None
        self._reading: asyncio.Task[list[Address | None]] | None = None
        self._redirects: set[asyncio.Task[None]] = set()

    async def execute(self, *args: str | int | bytes) -> Any:
        """Send one command to its node and return its reply."""
        return await (await self.send(*args))

    async def send(self, *args: str | int | bytes) -> asyncio.Future[Any]:
        """Hand one command to its node; the future of its reply, redirections followed."""
        address = await self._route(args)
        reply = await self._on(address, lambda node: node.send(*args))
        return self._follow(reply, args)

    def send_if_open(self, *args: str | int | bytes) -> asyncio.Future[Any] | None:
        """`send` without waiting, when the map is read and the node's connection is open;
        else None."""
        if self._slots is None:
            return None
        key = first_key(args)
        address = self._slots[key_slot(key) if key is not None else 0]
        node = self._nodes.get(address) if address is not None else None
        reply = node.send_if_open(*args) if node is not None else None
        return None if reply is None else self._follow(reply, args)

    async def execute_many(self, commands: list[Command]) -> list[Any]:
        """Send `commands`, one write per node, and return their replies in order; raises the
        first failure once every reply is in."""
        if not commands:
            return []
        groups: dict[Address, list[int]] = {}
        for index, command in enumerate(commands):
            groups.setdefault(await self._route(command), []).append(index)
        futures: list[asyncio.Future[Any]] = [None] * len(commands)  # type: ignore[list-item]
        for address, indexes in groups.items():
            batch = [commands[i] for i in indexes]
            sent = await self._on(address, lambda node, batch=batch: node.send_many(batch))
            for index, reply in zip(indexes, sent, strict=True):
                futures[index] = self._follow(reply, commands[index])
        return await gather_replies(futures)

    def reset(self) -> None:
        """Drop every node's connection (after a timeout, their state is unknown)."""
        for node in self._nodes.values():
            node.reset()

    async def aclose(self, drain_s: float = 1.0) -> None:
        """Close every node's connection once its replies are in (within `drain_s`); the map
        is read again by the next call."""
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.aclose(drain_s) for node in nodes))
        self._slots, self._reading = None, None

    def _node(self, address: Address) -> RedisConnection:
        node = self._nodes.get(address)
        if node is None:
            node = RedisConnection(
                self._url, scripts=self._scripts, idle_check_s=self._idle_check_s, address=address
            )
            self._nodes[address] = node
        return node

    async def _on(self, address: Address, call: Callable[[RedisConnection], Awaitable[_T]]) -> _T:
        try:
            return await call(self._node(address))
        except OSError:  # ConnectionError included: the node may have failed over
            self._slots = None
            raise

    async def _route(self, command: Command) -> Address:
        slots = self._slots
        if slots is None:
            slots = await self._read_map()
        key = first_key(command)
        address = slots[key_slot(key) if key is not None else 0]
        if address is None:
            raise ConnectionError("no node of the Redis Cluster serves the key's slot")
        return address

    async def _read_map(self) -> list[Address | None]:
        # One read for every request that finds the map missing; the first starts it.
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._fetch_map())
            # Its failure is raised to the callers waiting; retrieved even if all gave up.
            self._reading.add_done_callback(_retrieve)
        slots = await asyncio.shield(self._reading)
        self._slots = slots
        return slots

    async def _fetch_map(self) -> list[Address | None]:
        candidates = [self._seed, *(a for a in self._nodes if a != self._seed)]
        error: BaseException = ConnectionError("no node of the Redis Cluster answered")
        for address in candidates:
            try:
                reply = await self._node(address).execute("CLUSTER", "SLOTS")
            except RedisReplyError as exc:
                if "cluster support disabled" in str(exc):
                    return [address] * SLOTS  # a single server: it serves every slot
                error = exc
            except OSError as exc:
                error = exc
            else:
                return slot_table(reply, address[0])
        raise error

    def _follow(
        self,
        reply: asyncio.Future[Any],
        command: Command,
        redirects: int = 0,
        outcome: asyncio.Future[Any] | None = None,
    ) -> asyncio.Future[Any]:
        """The future of `command`'s final reply: `reply`'s, or that of the node it names."""
        loop = asyncio.get_running_loop()
        result = outcome if outcome is not None else loop.create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if result.done():  # its caller gave up (a bound passed)
                if not done.cancelled():
                    done.exception()  # retrieved: nobody waits for it now
                return
            if done.cancelled():
                result.cancel()
                return
            error = done.exception()
            if _is_redirect(error) and redirects < _MAX_REDIRECTS:
                task = loop.create_task(self._redirect(error, command, redirects, result))
                self._redirects.add(task)
                task.add_done_callback(self._redirects.discard)
                return
            if isinstance(error, ConnectionError):
                self._slots = None
            if error is not None:
                result.set_exception(error)
            else:
                result.set_result(done.result())

        reply.add_done_callback(settle)
        return result

    async def _redirect(
        self,
        error: RedisReplyError,
        command: Command,
        redirects: int,
        result: asyncio.Future[Any],
    ) -> None:
        try:
            if error.code == "TRYAGAIN":
                await asyncio.sleep(_TRY_AGAIN_S)
                if result.done():
                    return
                address = await self._route(command)
                reply = await self._on(address, lambda node: node.send(*command))
            else:
                # "MOVED 3999 10.0.0.2:6381"; an empty host means the node that answered.
                kind, slot, where = str(error).split(" ")[:3]
                host, _, port = where.rpartition(":")
                address = (host or self._seed[0], int(port))
                if kind == "MOVED":
                    if self._slots is not None:
                        self._slots[int(slot)] = address
                    reply = await self._on(address, lambda node: node.send(*command))
                else:
                    asking, reply = await self._on(
                        address, lambda node: node.send_many([("ASKING",), command])
                    )
                    asking.add_done_callback(_retrieve)
        except (OSError, RedisReplyError) as exc:
            if not result.done():
                result.set_exception(exc)
            return
        self._follow(reply, command, redirects + 1, result)


def slot_table(reply: list[Any], asked: str) -> list[Address | None]:
    """CLUSTER SLOTS' ranges ([first, last, [host, port, ...], replicas...]) as one address
    per slot; an empty or unknown host is the node that was asked."""
    table: list[Address | None] = [None] * SLOTS
    for first, last, primary, *_replicas in reply:
        host = primary[0].decode() if primary[0] else ""
        address = (host if host and host != "?" else asked, int(primary[1]))
        table[first : last + 1] = [address] * (last - first + 1)
    return table


def _is_redirect(error: BaseException | None) -> TypeGuard[RedisReplyError]:
    return isinstance(error, RedisReplyError) and error.code in _REDIRECTS


def _retrieve(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled():
        reply.exception()
