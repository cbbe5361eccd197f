"""One upstream HTTP/1.1 connection on the wire: the answer parsed by httptools as it arrives,
and the request's bytes written here.

httptools is llhttp (C), uvicorn's fast parser, with a third of h11's import; h11 had been a
quarter of the proxy's CPU per chat call, and replacing it took that from 629 to 510 µs at
16 clients (bench/performance.md).
A request's headers are the proxy's own; each name and value is still checked as h11 checks
it, so nothing HTTP cannot carry (a line break, a control byte) reaches the socket.
"""

from __future__ import annotations

import asyncio
import collections
import re

import httptools
import httpx

# Bytes held unparsed before the socket is no longer read: a fast upstream streaming to a
# slow caller waits in the kernel's buffers, not in this process's memory.
_MAX_UNREAD = 1 << 20
# The most an answer's status line and headers may take (h11's limit): a hostile upstream
# that never ends its headers is cut off, not buffered.
MAX_HEAD_BYTES = 16 * 1024

# RFC 9110's token (a method, a field name) and what a field value or a target may not hold.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE_FORBIDDEN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")
_TARGET_FORBIDDEN = re.compile(rb"[\x00-\x20\x7f]")
_NO_BODY = frozenset({204, 304})


class Head:
    """An answer's status and headers, as parsed."""

    __slots__ = ("headers", "reason", "status_code")

    def __init__(self, status_code: int, reason: bytes, headers: list[tuple[bytes, bytes]]):
        self.status_code = status_code
        self.reason = reason
        self.headers = headers


class End:
    """The end of an answer: `reusable` when the connection may carry another request."""

    __slots__ = ("reusable",)

    def __init__(self, reusable: bool) -> None:
        self.reusable = reusable


Event = Head | bytes | End


class Http11Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: its parser, and the parsed events not yet read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: Exception | None = None  # why the connection was lost, if it broke
        self.received = False  # a byte of the current answer came
        self.idle_since = 0.0
        self._events: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._invalid: str | None = None  # what made the bytes unreadable
        self._expecting = False  # a request was sent and its answer has not ended
        self._unread = 0
        self._paused = False
        # The answer being parsed.
        self._head_bytes = 0
        self._in_head = False
        self._in_body = False
        self._until_close = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []

    # asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._invalid is None:
            if self._in_head or not self._in_body:
                self._head_bytes += len(data)
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._invalid = "The upstream switched protocols unasked."
            except httptools.HttpParserError as exc:
                self._invalid = f"The upstream's answer is not HTTP/1.1: {exc}"
            if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
                self._invalid = "The upstream's answer headers are too long."
        if self._invalid is not None:
            self.close()
        elif self._unread > _MAX_UNREAD and not self._paused and self.transport is not None:
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

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if not self._expecting:
            self._invalid = "The upstream sent an answer nothing asked for."
        self._in_head, self._reason, self._headers = True, b"", []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._in_head, self._in_body = False, True
        self._head_bytes = 0
        length = any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self._headers
        )
        self._until_close = not length and status >= 200 and status not in _NO_BODY
        self._events.append(Head(status, self._reason, self._headers))

    def on_body(self, body: bytes) -> None:
        self._unread += len(body)
        self._events.append(body)

    def on_message_complete(self) -> None:
        final = self._parser.get_status_code() >= 200
        self._in_body = False
        if final:
            self._expecting = False
        self._events.append(End(final and self._parser.should_keep_alive()))

    # used by the pool

    def send(self, payload: bytes) -> None:
        """Write a request; its answer's events follow."""
        assert self.transport is not None
        self._expecting = True
        self.transport.write(payload)

    def close(self) -> None:
        """Close the connection; it is never used again."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def next_event(self, timeout_s: float | None) -> Event:
        """The answer's next event, waiting up to `timeout_s` for the bytes it needs."""
        while not self._events:
            if self._invalid is not None:
                raise httpx.RemoteProtocolError(self._invalid)
            self._unread = 0  # all read
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            if self.closed:
                if self._in_body and self._until_close:
                    # A body without a length ends with its connection.
                    self._in_body = self._expecting = False
                    return End(reusable=False)
                if self.error is not None:
                    raise httpx.ReadError(f"The connection broke: {type(self.error).__name__}.")
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a complete response."
                )
            waiter = self._waiter = self._loop.create_future()
            timer = None if timeout_s is None else self._loop.call_later(timeout_s, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        event = self._events.popleft()
        if type(event) is bytes:
            self._unread -= len(event)
        return event

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    # A timer rather than asyncio.timeout: the waiter is this connection's own, so failing
    # it needs no cancellation, and costs half as much on every wait.
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("The upstream sent nothing in time."))


def encode_request(request: httpx.Request) -> bytes:
    """The request's bytes on the wire; raises `httpx.LocalProtocolError` for what HTTP/1.1
    cannot carry (a name that is not a token, a value with a line break or control byte)."""
    method = request.method.encode("ascii", "replace")
    target = request.url.raw_path
    if not _TOKEN.fullmatch(method) or _TARGET_FORBIDDEN.search(target):
        raise httpx.LocalProtocolError("The request line cannot be sent as HTTP/1.1.")
    body = request.content
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    framed = False
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name) or _VALUE_FORBIDDEN.search(value):
            raise httpx.LocalProtocolError(f"The header {name!r} cannot be sent as HTTP/1.1.")
        if not framed and name.lower() == b"content-length":
            framed = True
        elif name.lower() == b"transfer-encoding":
            raise httpx.LocalProtocolError("A body in memory is sent whole, with its length.")
        parts += (name, b": ", value, b"\r\n")
    if not framed and body:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts += (b"\r\n", body)
    return b"".join(parts)
