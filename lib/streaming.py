"""Relaying the router's server-sent events to the caller, event by event, unbuffered.

A stream that breaks after it has started cannot change its status any more, so it
ends with an SSE error event in the OpenAI error shape, and never with `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from lib.errors import ProxyError, UpstreamError
from lib.upstream import UpstreamStream

DONE_EVENT = b"data: [DONE]\n\n"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def format_event(data: Any) -> bytes:
    """One SSE `data:` event holding `data` as compact JSON."""
    return (
        b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


def format_error_event(exc: ProxyError) -> bytes:
    """The SSE event that ends a broken stream; both official clients raise on it."""
    return format_event(exc.to_body())


async def relay_chat_events(stream: UpstreamStream) -> AsyncIterator[bytes]:
    """Pass chat completion chunks through as they arrive, then `[DONE]` once the router sent it.

    The events one upstream read completed go out as one piece: a write per read, not per
    event, which costs a fast upstream less and holds nothing back from a slow one.
    """
    ready: list[bytes] = []
    try:
        async for blocks in stream.event_batches():
            done = False
            for block in blocks:
                data = _event_data(block)
                if data == b"[DONE]":
                    ready.append(DONE_EVENT)
                    done = True
                    break
                if data is not None:
                    # Parsing every event costs microseconds; relaying a malformed one would
                    # make the caller's client fail with a confusing JSON error instead.
                    _parse_chunk(data)
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
        await stream.aclose()


async def relay_generate_events(stream: UpstreamStream, model: str) -> AsyncIterator[bytes]:
    """Turn chat chunks into `{"text": delta}` events and a closing event with the usage."""
    finish_reason: str | None = None
    usage: Any = None
    try:
        async for block in stream.events():
            data = _event_data(block)
            if data is None:
                continue
            if data == b"[DONE]":
                yield format_event(
                    {"model": model, "text": "", "finish_reason": finish_reason, "usage": usage}
                )
                yield DONE_EVENT
                return
            chunk = _parse_chunk(data)
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                if text:
                    yield format_event({"text": text})
                finish_reason = choice.get("finish_reason") or finish_reason
            usage = chunk.get("usage") or usage
        raise UpstreamError("The upstream stream ended before it was complete.")
    except ProxyError as exc:
        yield format_error_event(exc)
    finally:
        await stream.aclose()


def _event_data(block: bytes) -> bytes | None:
    """The `data:` payload of one event block, or None for comments and other fields."""
    lines = [line for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines).strip()


def _parse_chunk(data: bytes) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise UpstreamError("The upstream sent an event that is not JSON.") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("The upstream sent an event of an unexpected shape.")
    if "error" in chunk:
        raise _error_from_event(chunk)
    return chunk


def _error_from_event(event: dict[str, Any]) -> UpstreamError:
    error = event["error"]
    message = error.get("message") if isinstance(error, dict) else error
    text = str(message)[:300] if message else "no reason given"
    return UpstreamError(f"The upstream failed mid-stream: {text}")
