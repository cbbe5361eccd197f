"""Relaying the router's chat completion events to the caller, event by event, unbuffered.

A stream that breaks after it has started ends with an SSE error event in the OpenAI error
shape, and never with `[DONE]`. The relays count the request's tokens through a `Meter`
(the access layer's caller) however they end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from lib.errors import ProxyError, UpstreamError
from lib.upstream.event_stream import (
    DONE_EVENT,
    format_error_event,
    format_event,
    mid_stream_error,
    parse_event_data,
)
from lib.upstream.stream import UpstreamStream


class Meter(Protocol):
    """What counts a relayed request's tokens: the upstream's usage report, or an estimate
    from the prompt in `payload` and the characters of answer sent. Counts once."""

    async def charge(
        self, usage: Any, *, payload: dict[str, Any] | None = None, answer_chars: int = 0
    ) -> None: ...


async def relay_chat_events(
    stream: UpstreamStream, caller: Meter, payload: dict[str, Any], *, show_usage: bool
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
    stream: UpstreamStream, caller: Meter, payload: dict[str, Any]
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
    chunk = parse_event_data(data)
    if "error" in chunk:
        error = chunk["error"]
        raise mid_stream_error(error.get("message") if isinstance(error, dict) else error, stream)
    return chunk
