"""An open server-sent event stream from the upstream, read event by event within bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx

from lib.errors import UpstreamError, UpstreamTimeoutError
from lib.upstream.redaction import Redactor

MAX_EVENT_BYTES = 1024 * 1024


class UpstreamStream:
    """An open server-sent event stream from the router.

    `events()` yields each whole event block (its lines, without the blank line that
    ends it), bounded by the request deadline and by an idle limit between chunks;
    `event_batches()` yields the same blocks grouped by the read that completed them.
    Blocks come redacted of the server's token. `deadline` and `idle_timeout_s` also bound
    the relay's sends to the caller (`EventStreamResponse`).
    """

    def __init__(
        self,
        response: httpx.Response,
        deadline: float,
        idle_timeout_s: float,
        timeout_error: Callable[[], UpstreamTimeoutError],
        redactor: Redactor,
    ) -> None:
        self._response = response
        self.deadline = deadline
        self.idle_timeout_s = idle_timeout_s
        self._timeout_error = timeout_error
        self._redactor = redactor
        self._batches: AsyncIterator[list[bytes]] | None = None
        self._first: list[bytes] | None = None  # read by `prime`, not yet yielded

    async def prime(self, until: float) -> None:
        """Read the first events now, by `until`: a stream that ends, breaks or stalls
        before its first event raises `UpstreamError` here, before the caller has a byte
        (so the request can still go to a fallback)."""
        self._batches = batches = self._read_batches()
        try:
            async with asyncio.timeout_at(until):
                first = await anext(batches, None)
        except TimeoutError as exc:
            raise self._timeout_error() from exc
        if first is None:
            raise UpstreamError("The upstream stream ended before its first event.")
        self._first = first

    async def events(self) -> AsyncIterator[bytes]:
        """Yield event blocks as they arrive; raise `UpstreamError` if the stream breaks."""
        async for blocks in self.event_batches():
            for block in blocks:
                yield block

    async def event_batches(self) -> AsyncIterator[list[bytes]]:
        """Yield, per read from the upstream, the event blocks it completed (none held back)."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for blocks in self._batches or self._read_batches():
            yield blocks

    async def _read_batches(self) -> AsyncIterator[list[bytes]]:
        loop = asyncio.get_running_loop()
        chunks = self._response.aiter_bytes()
        buffer = b""
        while True:
            wait = min(self.idle_timeout_s, self.deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0)):
                    chunk = await anext(chunks, None)
            except TimeoutError as exc:
                raise self._timeout_error() from exc
            except httpx.HTTPError as exc:
                raise UpstreamError("The upstream connection broke mid-stream.") from exc
            if chunk is None:
                break
            buffer += chunk
            if b"\r" in buffer:
                buffer = buffer.replace(b"\r\n", b"\n")
            *blocks, buffer = buffer.split(b"\n\n")
            if len(buffer) > MAX_EVENT_BYTES:
                raise UpstreamError("The upstream sent an event larger than this proxy accepts.")
            if complete := [self._redactor.redact_bytes(b) for b in blocks if b.strip()]:
                yield complete
        if buffer.strip():
            yield [self._redactor.redact_bytes(buffer)]

    def reason(self, text: str) -> str:
        """An upstream's reason, fit for the caller: redacted of the token, then cut."""
        return self._redactor.reason(text)

    async def aclose(self) -> None:
        """Close the upstream response and its connection."""
        await self._response.aclose()
