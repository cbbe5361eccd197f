"""Relaying the Responses API's named server-sent events to the caller, unbuffered.

The router streams a response as events `event: <type>` + `data: {"type": <type>,
"sequence_number": n, ...}` (some servers send the `data:` line alone), ending with
`response.completed`, `response.failed` or `response.incomplete`; there is no
`data: [DONE]`. Each event goes out as it came, `event:` line included, and the stream
is complete once a terminal event has gone out. A stream that breaks before one (cut,
reset, idle or deadline timeout, an upstream `error` event, an event that is not JSON)
ends with the Responses API's `error` event, never with a made-up completion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lib.errors import ProxyError, UpstreamError
from lib.upstream.chat_relay import Meter
from lib.upstream.event_stream import format_event, mid_stream_error, parse_event_data
from lib.upstream.stream import UpstreamStream

TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})


def format_response_error_event(exc: ProxyError, sequence_number: int) -> bytes:
    """The `error` event that ends a broken Responses stream.

    It carries the fields OpenAI documents at the top level (what the AI SDK and the typed
    `ResponseErrorEvent` read) and the same error nested under `error`, as OpenAI's API
    also sends it: the openai SDK raises `APIError` on a streamed event only when `error`
    is set (`openai/_streaming.py`).
    """
    error = exc.to_body()["error"]
    data = {
        "type": "error",
        "code": exc.code,
        "message": exc.message,
        "param": exc.param,
        "sequence_number": sequence_number,
        "error": error,
    }
    return b"event: error\n" + format_event(data)


async def relay_response_events(
    stream: UpstreamStream, caller: Meter, payload: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Pass Responses events through as they arrive, until the terminal one.

    The events one upstream read completed go out as one piece, as for chat. The tokens are
    counted however the relay ends (terminal event, upstream error, caller gone, deadline,
    stalled reader): the terminal response's usage, or an estimate from the prompt and the
    text of every `*.delta` event sent.
    """
    ready: list[bytes] = []
    last_sequence = -1
    usage: Any = None
    sent_chars = 0
    try:
        async for blocks in stream.event_batches():
            finished = False
            for block in blocks:
                event = _parse_event(block)
                if event is not None:
                    kind = event.get("type")
                    if kind == "error":
                        # Replaced by this proxy's error event, which takes its place in order.
                        raise _error_from_event(event, stream)
                    sequence = event.get("sequence_number")
                    if isinstance(sequence, int) and not isinstance(sequence, bool):
                        last_sequence = max(last_sequence, sequence)
                    delta = event.get("delta")
                    if isinstance(delta, str) and isinstance(kind, str) and kind.endswith(".delta"):
                        sent_chars += len(delta)
                    if kind in TERMINAL_EVENTS:
                        response = event.get("response")
                        usage = response.get("usage") if isinstance(response, dict) else None
                        finished = True
                ready.append(block + b"\n\n")
                if finished:
                    break
            piece = b"".join(ready)
            ready.clear()
            if finished:
                await caller.charge(usage, payload=payload, answer_chars=sent_chars)
            yield piece
            if finished:
                return
        raise UpstreamError("The upstream stream ended before it was complete.")
    except ProxyError as exc:
        ready.append(format_response_error_event(exc, last_sequence + 1))
        yield b"".join(ready)
    finally:
        await caller.charge(usage, payload=payload, answer_chars=sent_chars)
        await stream.aclose()


def _parse_event(block: bytes) -> dict[str, Any] | None:
    """The event's JSON data with its `type` (from the `event:` line when data lacks one)."""
    name: bytes | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data_lines.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    if not data_lines:
        return None  # a comment (keep-alive) or a bare field: passed on as it is
    data = b"\n".join(data_lines).strip()
    if data == b"[DONE]":
        # A chat-style end marker is no terminal Responses event.
        raise UpstreamError("The upstream stream ended before it was complete.")
    event = parse_event_data(data)
    if not isinstance(event.get("type"), str) and name:
        event["type"] = name.decode(errors="replace")
    return event


def _error_from_event(event: dict[str, Any], stream: UpstreamStream) -> UpstreamError:
    """The upstream's `error` event (flat, or with the error nested), as the project's error."""
    error = event.get("error")
    return mid_stream_error(
        error.get("message") if isinstance(error, dict) else event.get("message"), stream
    )
