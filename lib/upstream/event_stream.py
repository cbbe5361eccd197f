"""The response that relays an upstream's server-sent events to the caller, and its events.

A stream that breaks after it has started cannot change its status any more, so it
ends with an SSE error event in the OpenAI error shape, and never with `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from lib.errors import ProxyError, UpstreamError
from lib.upstream.bodies import parse_json
from lib.upstream.stream import UpstreamStream

DONE_EVENT = b"data: [DONE]\n\n"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class BoundedStreamingResponse(StreamingResponse):
    """A streamed response whose every send to the caller is bounded, as upstream reads are.

    A caller who stops reading makes a send block once the socket's buffers are full. Each
    send must finish within the idle limit and before the request's deadline (loop time);
    when one does not, the body iterator is closed (and with it whatever it holds: the
    upstream response and its connection, or the answer's bytes) and the connection to the
    caller is dropped, since nothing more can reach them.
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        deadline: float,
        idle_timeout_s: float,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(body, headers=headers, media_type=media_type)
        self._body = body
        self._deadline = deadline
        self._idle_timeout_s = idle_timeout_s
        self._state: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._state = scope.setdefault("state", {})
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        """Send the head and every piece, each send within its bound."""
        loop = asyncio.get_running_loop()

        async def bounded_send(message: Message) -> None:
            async with asyncio.timeout_at(min(self._deadline, loop.time() + self._idle_timeout_s)):
                await send(message)

        try:
            head = {"status": self.status_code, "headers": self.raw_headers}
            await bounded_send({"type": "http.response.start", **head})
            async for chunk in self._body:
                await bounded_send({"type": "http.response.body", "body": chunk, "more_body": True})
            await bounded_send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            # The log line tells it apart from a caller who hung up.
            self._state["caller_stalled"] = True
        finally:
            await self._body.aclose()  # type: ignore[attr-defined]


class EventStreamResponse(BoundedStreamingResponse):
    """An event stream relayed from `stream`, its sends bounded by the stream's own deadline
    and idle limit."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], stream: UpstreamStream) -> None:
        super().__init__(
            events,
            deadline=stream.deadline,
            idle_timeout_s=stream.idle_timeout_s,
            headers=STREAM_HEADERS,
        )


def format_event(data: Any) -> bytes:
    """One SSE `data:` event holding `data` as compact JSON."""
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # A lone surrogate from the upstream: kept as a JSON escape, which is still valid.
        text = json.dumps(data, separators=(",", ":")).encode()
    return b"data: " + text + b"\n\n"


def format_error_event(exc: ProxyError) -> bytes:
    """The SSE event that ends a broken stream; both official clients raise on it."""
    return format_event(exc.to_body())


def parse_event_data(data: bytes) -> dict[str, Any]:
    """An event's `data` as the JSON object it must be, or an `UpstreamError`."""
    try:
        event = parse_json(data)
    except ValueError as exc:
        raise UpstreamError("The upstream sent an event that is not JSON.") from exc
    if not isinstance(event, dict):
        raise UpstreamError("The upstream sent an event of an unexpected shape.")
    return event


def mid_stream_error(message: Any, stream: UpstreamStream) -> UpstreamError:
    """The error for an upstream's error event: its reason, redacted and cut."""
    text = stream.reason(str(message)) if message else "no reason given"
    return UpstreamError(f"The upstream failed mid-stream: {text}")
