"""The default upstream transport: HTTP/1.1 over asyncio's own protocols, parsed by h11.

httpx's pool (httpcore) polls every pooled socket and walks every queued request on each
call (encode/httpx#3215), over anyio streams: about 1 ms of CPU per call at 16 at once,
where this pool costs about a fifth of that, as aiohttp's does, without aiohttp's 110-130 ms
import (bench/performance.md). h11 is what httpcore parses with, so it costs no import.

The pool keeps idle connections per origin, newest first; the event loop says when the
server closes one (`connection_lost`), so none is polled. One that idled past
`keepalive_expiry_s` is closed unused (a frozen function may wake to connections its server
closed long ago), and a request that a reused connection fails before any byte of its
answer came is sent once more on a new one, as urllib3 does. Errors are httpx's own, as its
transport raises them for the same fault.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

# Idle connections kept per origin, and how long each may idle (httpx's default expiry).
MAX_IDLE = 200
KEEPALIVE_EXPIRY_S = 5.0
# Bytes held unparsed before the socket is no longer read: a fast upstream streaming to a
# slow caller waits in the kernel's buffers, not in this process's memory.
_MAX_UNREAD = 1 << 20

_Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: h11's state, and the bytes the server sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.state = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: Exception | None = None  # why the connection was lost, if it broke
        self.received = False  # a byte of the current answer came
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._unread = 0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.state.receive_data(data)
        self._unread += len(data)
        if self._unread > _MAX_UNREAD and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def close(self) -> None:
        """Close the connection; it is never used again."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def next_event(self, timeout_s: float | None) -> Any:
        """h11's next event, waiting up to `timeout_s` for the bytes it needs."""
        while True:
            try:
                event = self.state.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            self._unread = 0  # all parsed
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            if self.closed:
                if self.state.their_state is h11.SEND_BODY:
                    self.state.receive_data(b"")  # EOF ends a body read until close
                    continue
                if self.error is not None:
                    raise httpx.ReadError(f"The connection broke: {type(self.error).__name__}.")
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a complete response."
                )
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            except TimeoutError as exc:
                raise httpx.ReadTimeout("The upstream sent nothing in time.") from exc
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; the connection goes back to the pool once it is
    read whole, and is closed when the reader stops early."""

    def __init__(
        self,
        pool: Http11Transport,
        origin: _Origin,
        connection: _Connection,
        timeout_s: float | None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection: _Connection | None = connection
        self._timeout_s = timeout_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            while True:
                event = await connection.next_event(self._timeout_s)
                if type(event) is h11.Data:
                    yield bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._release(reusable=True)
                    return
                else:
                    raise httpx.RemoteProtocolError(f"Unexpected {type(event).__name__}.")
        except BaseException:
            self._release(reusable=False)
            raise

    async def aclose(self) -> None:
        """Stop reading: an answer not read whole closes its connection."""
        self._release(reusable=False)

    def _release(self, *, reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(self._origin, connection, reusable=reusable)


class Http11Transport(httpx.AsyncBaseTransport):
    """A pool of HTTP/1.1 connections for httpx requests whose body is in memory (as the
    upstream client's are); TLS verified as httpx verifies it. Bound to one event loop."""

    def __init__(
        self, *, max_idle: int = MAX_IDLE, keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S
    ) -> None:
        self._idle: dict[_Origin, collections.deque[_Connection]] = {}
        self._max_idle = max_idle
        self._expiry_s = keepalive_expiry_s
        self._ssl: ssl.SSLContext | None = None
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the response's body streams from the connection."""
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        connection = self._checkout(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, timeouts)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if connection.received:
                    raise
                # The server closed it as it was reused: nothing of an answer came.
        connection = await self._connect(origin, timeouts.get("connect"))
        return await self._exchange(origin, connection, request, timeouts)

    def release(self, origin: _Origin, connection: _Connection, *, reusable: bool) -> None:
        """Take back `connection` after an answer: pooled when it can serve another."""
        state = connection.state
        if (
            reusable
            and not connection.closed
            and state.our_state is h11.DONE
            and state.their_state is h11.DONE
        ):
            state.start_next_cycle()
            connection.received = False
            connection.idle_since = asyncio.get_running_loop().time()
            idle = self._idle.setdefault(origin, collections.deque())
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()  # the newest: the least likely to be closed by now
            if not connection.closed and now - connection.idle_since < self._expiry_s:
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    async def _connect(self, origin: _Origin, timeout_s: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == b"https" else None
        hostname = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    hostname,
                    port,
                    ssl=context,
                    server_hostname=hostname if context else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("Connecting to the upstream timed out.") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"Could not connect: {type(exc).__name__}.") from exc
        self._open.add(connection)
        return connection

    async def _exchange(
        self,
        origin: _Origin,
        connection: _Connection,
        request: httpx.Request,
        timeouts: dict[str, Any],
    ) -> httpx.Response:
        assert connection.transport is not None
        try:
            connection.transport.write(_encode(connection.state, request))
            read_s = timeouts.get("read")
            event = await connection.next_event(read_s)
            while type(event) is h11.InformationalResponse:
                event = await connection.next_event(read_s)
        except BaseException:
            connection.close()
            self._open.discard(connection)
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, origin, connection, read_s),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # httpx's own: certifi's CAs (or SSL_CERT_FILE / SSL_CERT_DIR), ALPN http/1.1.
            self._ssl = httpx.create_ssl_context()
        return self._ssl


def _encode(state: h11.Connection, request: httpx.Request) -> bytes:
    """The request's bytes on the wire, through the connection's state; raises
    `httpx.LocalProtocolError` for what HTTP/1.1 cannot carry."""
    try:
        head = state.send(
            h11.Request(
                method=request.method, target=request.url.raw_path, headers=request.headers.raw
            )
        )
        body = state.send(h11.Data(data=request.content)) if request.content else b""
        end = state.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from exc
    return b"".join((head or b"", body or b"", end or b""))
