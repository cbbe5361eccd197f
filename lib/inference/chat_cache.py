"""Chat and `/api/generate` through the response cache: a hit answered from the kept
completion (streamed or not, whichever the caller asks), a miss from the upstream and kept
when it ended normally (a stream only once it reached `[DONE]`) and the model asked answered
it (not a fallback).

The route hands in how the upstream is called (`forward` for an answer in one piece,
`stream` for a relayed stream, its events passed through the `EventsWrap` given), so that
its fallbacks and upstream choice stay the route's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi.responses import Response

from lib.inference.cache_lookup import CacheLookup, look_up
from lib.inference.cache_replay import (
    ChatStreamGatherer,
    GenerateStreamGatherer,
    is_cacheable_completion,
    replay_chat_stream,
    replay_generate_stream,
    saved_tokens,
)
from lib.inference.chat import CHAT_PATH, GENERATE_PATH, EventsWrap, generate_answer
from lib.schemas import GenerateResponse
from lib.upstream import STREAM_HEADERS, EventStreamResponse, UpstreamCall, UpstreamReply

if TYPE_CHECKING:
    from lib.access import Caller, ResponseCache

Forward = Callable[[], Awaitable[UpstreamReply]]
Stream = Callable[[EventsWrap], Awaitable[EventStreamResponse]]


async def cached_chat(
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
    cache: ResponseCache,
    cache_control: str | None,
    *,
    forward: Forward,
    stream: Stream,
) -> Response:
    """Serve a chat completion (streamed when `payload` asks) from the cache or the upstream."""
    lookup = look_up(cache, caller, CHAT_PATH, payload, cache_control)
    streamed = payload.get("stream") is True
    show_usage = (payload.get("stream_options") or {}).get("include_usage") is True
    hit = await _hit(lookup)
    if hit is not None:
        if streamed:
            body = replay_chat_stream(hit, show_usage=show_usage)
            return Response(body, media_type="text/event-stream", headers=STREAM_HEADERS)
        return Response(_json(hit), media_type="application/json")
    if streamed:
        gatherer = ChatStreamGatherer()

        def completion() -> dict[str, Any] | None:
            return _checked(gatherer.completion(_usage_of(caller)))

        return await stream(lookup.keeping(call, gatherer.feed, completion))
    reply = await forward()
    await lookup.keep(_checked(reply.data), call.model)
    return Response(reply.content, media_type="application/json")


async def cached_generate(
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
    cache: ResponseCache,
    cache_control: str | None,
    *,
    forward: Forward,
    stream: Stream,
) -> Response | GenerateResponse:
    """Serve `/api/generate` (streamed when `payload` asks) from the cache or the upstream;
    `forward` is the chat completion that serves it."""
    lookup = look_up(cache, caller, GENERATE_PATH, payload, cache_control)
    hit = await _hit(lookup)
    if hit is not None:
        if payload.get("stream") is True:
            body = replay_generate_stream(hit, payload["model"])
            return Response(body, media_type="text/event-stream", headers=STREAM_HEADERS)
        return generate_answer(hit, payload["model"])
    if payload.get("stream") is True:
        text = GenerateStreamGatherer()
        return await stream(lookup.keeping(call, text.feed, lambda: _checked(text.completion())))
    reply = await forward()
    await lookup.keep(_checked(reply.data), call.model)
    return generate_answer(reply.data, call.model)


async def _hit(lookup: CacheLookup) -> dict[str, Any] | None:
    """The kept completion, counted as a hit; None on a miss (or an entry not usable)."""
    entry = await lookup.read_entry()
    if entry is None or not is_cacheable_completion(entry.body):
        return None
    lookup.mark("hit", entry.age_s)
    await lookup.caller.charge_cache_hit(saved_tokens(entry.body))
    return entry.body


def _checked(completion: dict[str, Any] | None) -> dict[str, Any] | None:
    return completion if is_cacheable_completion(completion) else None


def _usage_of(caller: Caller) -> dict[str, int] | None:
    """The usage the relay counted (the upstream's report, or its estimate)."""
    prompt, completion = caller.record.prompt_tokens, caller.record.completion_tokens
    if prompt is None or completion is None:
        return None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _json(data: dict[str, Any]) -> bytes:
    # ASCII escapes: a lone surrogate an upstream sent stays valid JSON.
    return json.dumps(data, separators=(",", ":")).encode()
