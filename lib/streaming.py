"""Relaying the router's server-sent events to the caller, event by event, unbuffered.

A stream that breaks after it has started cannot change its status any more, so it
ends with an SSE error event in the OpenAI error shape, and never with `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from lib.errors import ProxyError, UpstreamError
from lib.upstream import UpstreamStream, parse_json

if TYPE_CHECKING:
    from lib.access import Caller

DONE_EVENT = b"data: [DONE]\n\n"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(StreamingResponse):
    """An event stream whose every send to the caller is bounded, as its upstream reads are.

    A caller who stops reading makes a send block once the socket's buffers are full. Each
    send must finish within the idle limit and before the request's deadline; when one
    does not, the relay is closed (and with it the upstream response and its connection)
    and the connection to the caller is dropped, since nothing more can reach them.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], stream: UpstreamStream) -> None:
        super().__init__(events, headers=STREAM_HEADERS)
        self._events = events
        self._deadline = stream.deadline
        self._idle_timeout_s = stream.idle_timeout_s
        self._state: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._state = scope.setdefault("state", {})
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        """Send the head and every event, each send within its bound."""
        loop = asyncio.get_running_loop()

        async def bounded_send(message: Message) -> None:
            async with asyncio.timeout_at(min(self._deadline, loop.time() + self._idle_timeout_s)):
                await send(message)

        try:
            head = {"status": self.status_code, "headers": self.raw_headers}
            await bounded_send({"type": "http.response.start", **head})
            async for chunk in self._events:
                await bounded_send({"type": "http.response.body", "body": chunk, "more_body": True})
            await bounded_send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            # The log line tells it apart from a caller who hung up.
            self._state["caller_stalled"] = True
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]


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


async def relay_chat_events(
    stream: UpstreamStream, caller: Caller, payload: dict[str, Any], *, show_usage: bool
) -> AsyncIterator[bytes]:
    """Pass chat completion chunks through as they arrive, then `[DONE]` once the router sent it.

    The events one upstream read completed go out as one piece: a write per read, not per
    event, which costs a fast upstream less and holds nothing back from a slow one. The
    usage chunk (asked for upstream) is relayed only if the caller asked for it; the tokens
    are counted before `[DONE]` goes out, or, when the stream ends early, from what was sent.
    """
    ready: list[bytes] = []
    usage: Any = None
    sent_chars = 0
    try:
        async for blocks in stream.event_batches():
            done = False
            for block in blocks:
                data = _event_data(block)
                if data == b"[DONE]":
                    await caller.charge(usage, payload=payload, answer_chars=sent_chars)
                    ready.append(DONE_EVENT)
                    done = True
                    break
                if data is not None:
                    # Parsing every event costs microseconds; relaying a malformed one would
                    # make the caller's client fail with a confusing JSON error instead.
                    chunk = _parse_chunk(data, stream)
                    choices = chunk.get("choices")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        if not choices and not show_usage:
                            continue
                    sent_chars += _delta_chars(choices)
                ready.append(block + b"\n\n")
            piece = b"".join(ready)
            ready.clear()
            yield piece
            if done:
                return
        raise UpstreamError("The upstream stream ended before it was complete.")
    except ProxyError as exc:
        ready.append(format_error_event(exc))
        yield b"".join(ready)
    finally:
        await caller.charge(usage, payload=payload, answer_chars=sent_chars)
        await stream.aclose()


async def relay_generate_events(
    stream: UpstreamStream, caller: Caller, payload: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Turn chat chunks into `{"text": delta}` events and a closing event with the usage."""
    model = payload["model"]
    finish_reason: str | None = None
    usage: Any = None
    sent_chars = 0
    try:
        async for block in stream.events():
            data = _event_data(block)
            if data is None:
                continue
            if data == b"[DONE]":
                await caller.charge(usage, payload=payload, answer_chars=sent_chars)
                yield format_event(
                    {"model": model, "text": "", "finish_reason": finish_reason, "usage": usage}
                )
                yield DONE_EVENT
                return
            chunk = _parse_chunk(data, stream)
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                if text:
                    sent_chars += len(text)
                    yield format_event({"text": text})
                finish_reason = choice.get("finish_reason") or finish_reason
            usage = chunk.get("usage") or usage
        raise UpstreamError("The upstream stream ended before it was complete.")
    except ProxyError as exc:
        yield format_error_event(exc)
    finally:
        await caller.charge(usage, payload=payload, answer_chars=sent_chars)
        await stream.aclose()


def _delta_chars(choices: Any) -> int:
    """The characters of text a chunk's choices carry (to estimate tokens without a report)."""
    chars = 0
    for choice in choices or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return chars


def _event_data(block: bytes) -> bytes | None:
    """The `data:` payload of one event block, or None for comments and other fields."""
    lines = [line for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines).strip()


def _parse_chunk(data: bytes, stream: UpstreamStream) -> dict[str, Any]:
    try:
        chunk = parse_json(data)
    except ValueError as exc:
        raise UpstreamError("The upstream sent an event that is not JSON.") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("The upstream sent an event of an unexpected shape.")
    if "error" in chunk:
        raise _error_from_event(chunk, stream)
    return chunk


def _error_from_event(event: dict[str, Any], stream: UpstreamStream) -> UpstreamError:
    error = event["error"]
    message = error.get("message") if isinstance(error, dict) else error
    text = stream.reason(str(message)) if message else "no reason given"
    return UpstreamError(f"The upstream failed mid-stream: {text}")
