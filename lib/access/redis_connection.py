"""One pipelined connection to Redis, speaking the part of its protocol (RESP2) the store uses.

Not redis-py: its per-command path (a pool checkout, a retry wrapper, observability hooks,
response callbacks) cost about twice the protocol's own work per call here, and it cannot
hand a command to the socket without waiting for its reply, which settling a reservation
does not need (bench/performance.md). The limit store sends EVALSHA, EVAL and PING; every
request of an instance shares this one connection, its commands pipelined and answered in
order, and the commands handed over in one step of the event loop written together, so a
burst of requests costs a few socket writes and reads, not one each.
Replies are parsed and commands packed by hiredis (Redis's own C parser, which redis-py
uses too): the parser in Python it replaced cost ~5 us a reply (bench/performance.md).

Errors: an error reply raises `RedisReplyError`; a connection that fails or closes raises
`ConnectionError` (or `OSError` from connecting). The store (`lib.access.redis_store`)
bounds every call and turns both into `LimitStoreError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

# A connection idle this long is checked with PING before it is used (as redis-py's
# health_check_interval did): managed Redis closes idle connections without a word.
IDLE_CHECK_S = 30.0


class RedisReplyError(Exception):
    """Redis answered a command with an error (`NOSCRIPT ...`, `WRONGPASS ...`)."""

    @property
    def code(self) -> str:
        """The error's first word, which names its kind."""
        return str(self).split(" ", 1)[0]


def encode_command(*args: str | int | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    return hiredis.pack_command(args)


class _RespProtocol(asyncio.Protocol):
    """Writes commands and settles the futures waiting for their replies, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        # Commands handed over in this step of the event loop: written together once it ends
        # (before the loop next reads a socket, so before any later request is read), so
        # requests that reach Redis together share one system call, and Redis one read.
        self._outgoing: list[bytes] = []
        self.lost = False
        self.last_reply_at = loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._waiting:
                    raise hiredis.ProtocolError("a reply to no command")
                waiter = self._waiting.popleft()
                if waiter.done():  # its caller gave up (a bound passed)
                    continue
                if isinstance(reply, RedisReplyError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except hiredis.ProtocolError as exc:
            # The rest of the stream cannot be trusted: close it, not only stop reading it.
            if self._transport is not None:
                self._transport.close()
            self._fail(ConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        self.last_reply_at = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the connection to Redis closed"))

    @property
    def pending(self) -> list[asyncio.Future[Any]]:
        """The replies still due."""
        return list(self._waiting)

    def send(self, payload: bytes, replies: int) -> list[asyncio.Future[Any]]:
        """Hand over `payload` (`replies` commands), written once this step of the event loop
        ends, with every other command handed over in it; one future per command, in order."""
        if self.lost or self._transport is None:
            raise ConnectionError("the connection to Redis closed")
        futures = [self._loop.create_future() for _ in range(replies)]
        self._waiting.extend(futures)
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(payload)
        return futures

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and not self.lost and self._transport is not None:
            self._transport.write(b"".join(outgoing))

    def close(self) -> None:
        """Close the connection; whatever waits fails."""
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("the connection to Redis was closed"))

    def _fail(self, error: ConnectionError) -> None:
        self.lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)


async def gather_replies(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """The replies of `futures`, in order; raises the first failure once every reply is in."""
    replies = await asyncio.gather(*futures, return_exceptions=True)
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


class RedisConnection:
    """A `redis://` or `rediss://` URL's server (user, password and database from the URL;
    `rediss://` verifies the server's certificate against the system's CAs), reached over
    one connection that is opened on first use, and again after it fails or the event
    loop changes. Each new connection authenticates, selects the database and loads
    `scripts` in one round trip.

    Calls are unbounded here: the caller bounds them, and calls `reset` after a timeout.
    `address` names another server than the URL's, with the URL's credentials (a node of a
    Redis Cluster, `lib.access.redis_cluster`).
    """

    def __init__(
        self,
        url: str,
        *,
        scripts: tuple[str, ...] = (),
        idle_check_s: float = IDLE_CHECK_S,
        address: tuple[str, int] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._idle_check_s = idle_check_s
        self._host, self._port = address or (parts.hostname or "localhost", parts.port or 6379)
        self._tls = parts.scheme == "rediss"
        self._handshake: list[tuple[str | int | bytes, ...]] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            auth = (
                ("AUTH", user, unquote(parts.password))
                if user
                else ("AUTH", unquote(parts.password))
            )
            self._handshake.append(auth)
        database = parts.path.strip("/")
        if database and database != "0":
            self._handshake.append(("SELECT", int(database)))
        # Loaded on every new connection, so EVALSHA finds them on a server just started.
        self._handshake += [("SCRIPT", "LOAD", script) for script in scripts]
        self._protocol: _RespProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_RespProtocol] | None = None

    async def execute(self, *args: str | int | bytes) -> Any:
        """Send one command and return its reply."""
        return await (await self.send(*args))

    async def send(self, *args: str | int | bytes) -> asyncio.Future[Any]:
        """Hand one command to the connection (connecting first if need be) and return the
        future of its reply, which the caller may await or leave to settle by itself."""
        protocol = await self._ready()
        return protocol.send(encode_command(*args), 1)[0]

    def send_if_open(self, *args: str | int | bytes) -> asyncio.Future[Any] | None:
        """`send` without waiting: the future of the reply when the connection is open and
        was answering lately, else None (`send` connects or checks it first)."""
        if self._loop is not asyncio.get_running_loop() or (protocol := self._fresh()) is None:
            return None
        return protocol.send(encode_command(*args), 1)[0]

    async def send_many(
        self, commands: list[tuple[str | int | bytes, ...]]
    ) -> list[asyncio.Future[Any]]:
        """Hand `commands` to the connection in one write; the futures of their replies."""
        if not commands:
            return []
        protocol = await self._ready()
        payload = b"".join(encode_command(*command) for command in commands)
        return protocol.send(payload, len(commands))

    async def execute_many(self, commands: list[tuple[str | int | bytes, ...]]) -> list[Any]:
        """Send `commands` in one write and return their replies, in order; raises the
        first failure (an error reply, a lost connection) once every reply is in."""
        return await gather_replies(await self.send_many(commands))

    def reset(self) -> None:
        """Drop the connection (after a timeout, its state is unknown); the next call opens
        a new one."""
        protocol, self._protocol, self._connecting = self._protocol, None, None
        if protocol is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                protocol.close()

    async def aclose(self, drain_s: float = 1.0) -> None:
        """Close the connection once the replies still due have come (within `drain_s`: a
        settlement sent just before is read, not cut); a later call opens a new one."""
        protocol = self._protocol
        if protocol is not None and protocol.pending and self._loop is asyncio.get_running_loop():
            await asyncio.wait(protocol.pending, timeout=drain_s)
        self.reset()
        self._loop = None

    async def _ready(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.reset()
            self._loop = loop
        if (protocol := self._fresh()) is not None:
            return protocol
        protocol = self._protocol
        if protocol is not None and not protocol.lost and await self._answers(protocol):
            return protocol
        if self._connecting is None or self._connecting.done():
            # One connection for every request that needs it now: the first opens it.
            self._connecting = loop.create_future()
            connecting = self._connecting
            try:
                self._protocol = await self._connect(loop)
            except BaseException as exc:
                self._connecting = None
                connecting.set_exception(ConnectionError(f"cannot connect to Redis: {exc}"))
                connecting.exception()  # retrieved: only the callers waiting see it
                raise
            connecting.set_result(self._protocol)
            return self._protocol
        return await asyncio.shield(self._connecting)

    def _fresh(self) -> _RespProtocol | None:
        """The open connection, when it answered within the idle check's interval."""
        protocol = self._protocol
        if protocol is None or protocol.lost or self._loop is None:
            return None
        if self._loop.time() - protocol.last_reply_at >= self._idle_check_s:
            return None
        return protocol

    async def _answers(self, protocol: _RespProtocol) -> bool:
        try:
            await protocol.send(encode_command("PING"), 1)[0]
        except (ConnectionError, RedisReplyError):
            self.reset()
            return False
        return True

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _RespProtocol:
        context = ssl.create_default_context() if self._tls else None
        _, protocol = await loop.create_connection(
            lambda: _RespProtocol(loop),
            self._host,
            self._port,
            ssl=context,
            server_hostname=self._host if context else None,
        )
        if self._handshake:
            payload = b"".join(encode_command(*c) for c in self._handshake)
            try:
                for reply in protocol.send(payload, len(self._handshake)):
                    await reply
            except BaseException:
                protocol.close()
                raise
        return protocol
