"""The Responses API through the response cache: a hit answered from the kept response (in one
piece, or replayed as the named events a relayed stream sends), a miss from the upstream and
kept when it completed (a stream once its `response.completed` went out) and the model asked
answered it (not a fallback).

Kept: responses whose status is `completed`, or `incomplete` for `max_output_tokens` (chat's
`length`), whose every output item is a message of `output_text` parts or a function call,
which is what a replay can send back as events. Nothing is ever stored upstream: the route
sends `store: false`, and refuses `store: true` before the cache is asked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi.responses import Response

from lib.inference.cache_lookup import look_up
from lib.inference.chat import EventsWrap
from lib.inference.responses import RESPONSES_PATH
from lib.upstream import (
    STREAM_HEADERS,
    EventStreamResponse,
    UpstreamCall,
    UpstreamReply,
    format_event,
)

if TYPE_CHECKING:
    from lib.access import Caller, ResponseCache

_TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete"}


def is_cacheable_response(data: Any) -> bool:
    """True for a finished response a replay can send back as events."""
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        return False
    if data.get("status") == "incomplete":
        details = data.get("incomplete_details")
        if not isinstance(details, dict) or details.get("reason") != "max_output_tokens":
            return False
    elif data.get("status") != "completed":
        return False
    return bool(data["output"]) and all(_replayable(item) for item in data["output"])


def _replayable(item: Any) -> bool:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return False
    if item.get("type") == "function_call":
        return isinstance(item.get("arguments"), str)
    parts = item.get("content")
    return (
        item.get("type") == "message"
        and isinstance(parts, list)
        and all(
            isinstance(p, dict)
            and p.get("type") == "output_text"
            and isinstance(p.get("text"), str)
            for p in parts
        )
    )


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and part.get("type") == "output_text"
        and isinstance(part.get("text"), str)
    )


async def cached_response(
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
    cache: ResponseCache,
    cache_control: str | None,
    *,
    forward: Callable[[], Awaitable[UpstreamReply]],
    stream: Callable[[EventsWrap], Awaitable[EventStreamResponse]],
) -> Response:
    """Serve `/v1/responses` (streamed when `payload` asks) from the cache, or through the
    route's `forward` (in one piece) or `stream` (events through the wrap given)."""
    lookup = look_up(cache, caller, RESPONSES_PATH, payload, cache_control)
    streamed = payload.get("stream") is True
    entry = await lookup.read_entry()
    if entry is not None and is_cacheable_response(entry.body):
        lookup.mark("hit", entry.age_s)
        usage = entry.body.get("usage") or {}
        saved = [usage.get(n) for n in ("input_tokens", "output_tokens")]
        await caller.charge_cache_hit(sum(n for n in saved if isinstance(n, int)))
        if streamed:
            body = replay_response_stream(entry.body)
            return Response(body, media_type="text/event-stream", headers=STREAM_HEADERS)
        return Response(json.dumps(entry.body).encode(), media_type="application/json")
    if not streamed:
        reply = await forward()
        await lookup.keep(reply.data if is_cacheable_response(reply.data) else None, call.model)
        return Response(reply.content, media_type="application/json")
    gatherer = ResponseStreamGatherer()

    def gathered() -> dict[str, Any] | None:
        kept = gatherer.response
        return kept if is_cacheable_response(kept) else None

    return await stream(lookup.keeping(call, gatherer.feed, gathered))


class ResponseStreamGatherer:
    """Finds the response a relayed Responses stream ended with (its terminal event); holds
    it only when no error event came before."""

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None
        self._broken = False
        self._buffer = b""

    def feed(self, piece: bytes) -> None:
        """Read the events of one piece the relay sent."""
        self._buffer += piece
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        for block in blocks:
            lines = [line[5:].strip() for line in block.split(b"\n") if line[:5] == b"data:"]
            if not lines or self._broken:
                continue
            try:
                event = json.loads(b"\n".join(lines))
            except ValueError:
                event = None
            kind = event.get("type") if isinstance(event, dict) else None
            if kind is None or kind == "error" or kind == "response.failed":
                self._broken, self.response = True, None
            elif kind in ("response.completed", "response.incomplete"):
                held = event.get("response")
                self.response = held if isinstance(held, dict) else None


def replay_response_stream(response: dict[str, Any]) -> bytes:
    """A kept response as the named events of a stream, in the order OpenAI sends them."""
    events: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(events), **fields}
        events.append(f"event: {kind}\n".encode() + format_event(data))

    starting = {**response, "status": "in_progress", "output": [], "usage": None}
    event("response.created", response=starting)
    event("response.in_progress", response=starting)
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            event("response.function_call_arguments.delta", **where, delta=item["arguments"])
            event("response.function_call_arguments.done", **where, arguments=item["arguments"])
        else:
            opened = {**item, "status": "in_progress", "content": []}
            event("response.output_item.added", output_index=index, item=opened)
            for part_index, part in enumerate(item["content"]):
                at = {**where, "content_index": part_index}
                empty = {**part, "text": ""}
                event("response.content_part.added", **at, part=empty)
                event("response.output_text.delta", **at, delta=part["text"], logprobs=[])
                event("response.output_text.done", **at, text=part["text"], logprobs=[])
                event("response.content_part.done", **at, part=part)
        event("response.output_item.done", output_index=index, item=item)
    event(_TERMINAL[response["status"]], response=response)
    return b"".join(events)
