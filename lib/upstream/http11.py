"""The default upstream transport: a pool of HTTP/1.1 connections on asyncio's own protocols.

httpx's pool (httpcore) polls every pooled socket and walks every queued request on each
call (encode/httpx#3215), over anyio streams: about 1 ms of CPU per call at 16 at once.
This pool costs less than a fifth of that, less than aiohttp's, without aiohttp's 110-130 ms
import (bench/performance.md); its connections (`lib.upstream.http11_wire`) parse with
httptools.

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

import httpx

from lib.upstream.http11_wire import End, Head, Http11Connection, encode_request

# Idle connections kept per origin, and how long each may idle (httpx's default expiry).
MAX_IDLE = 200
KEEPALIVE_EXPIRY_S = 5.0

_Origin = tuple[bytes, bytes, int]


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; the connection goes back to the pool once it is
    read whole, and is closed when the reader stops early."""

    def __init__(
        self,
        pool: Http11Transport,
        origin: _Origin,
        connection: Http11Connection,
        timeout_s: float | None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection: Http11Connection | None = connection
        self._timeout_s = timeout_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            while True:
                event = await connection.next_event(self._timeout_s)
                if type(event) is bytes:
                    yield event
                elif type(event) is End:
                    self._release(reusable=event.reusable)
                    return
                else:
                    raise httpx.RemoteProtocolError("A second answer began inside the first.")
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
        self._idle: dict[_Origin, collections.deque[Http11Connection]] = {}
        self._max_idle = max_idle
        self._expiry_s = keepalive_expiry_s
        self._ssl: ssl.SSLContext | None = None
        self._open: set[Http11Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the response's body streams from the connection."""
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        payload = encode_request(request)
        connection = self._checkout(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, payload, timeouts)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if connection.received:
                    raise
                # The server closed it as it was reused: nothing of an answer came.
        connection = await self._connect(origin, timeouts.get("connect"))
        return await self._exchange(origin, connection, payload, timeouts)

    def release(self, origin: _Origin, connection: Http11Connection, *, reusable: bool) -> None:
        """Take back `connection` after an answer: pooled when it can serve another."""
        if reusable and not connection.closed:
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

    def _checkout(self, origin: _Origin) -> Http11Connection | None:
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

    async def _connect(self, origin: _Origin, timeout_s: float | None) -> Http11Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == b"https" else None
        hostname = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: Http11Connection(loop),
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
        connection: Http11Connection,
        payload: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        try:
            connection.send(payload)
            read_s = timeouts.get("read")
            head = await connection.next_event(read_s)
            while type(head) is Head and head.status_code < 200:  # 100 Continue and the like
                while type(head) is not End:
                    head = await connection.next_event(read_s)
                head = await connection.next_event(read_s)
            if type(head) is not Head:
                raise httpx.RemoteProtocolError("The upstream's answer has no status line.")
        except BaseException:
            connection.close()
            self._open.discard(connection)
            raise
        return httpx.Response(
            head.status_code,
            headers=head.headers,
            stream=_Body(self, origin, connection, read_s),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # httpx's own: certifi's CAs (or SSL_CERT_FILE / SSL_CERT_DIR), ALPN http/1.1.
            self._ssl = httpx.create_ssl_context()
        return self._ssl
