"""Chat operations: build the upstream chat request, forward or stream it, shape the answer
(`/v1/chat/completions` and `/api/generate`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from lib.errors import UpstreamError
from lib.schemas import ChatCompletionRequest, GenerateRequest, GenerateResponse, Usage
from lib.upstream import (
    EventStreamResponse,
    UpstreamCall,
    UpstreamClient,
    UpstreamReply,
    relay_chat_events,
    relay_generate_events,
)

if TYPE_CHECKING:
    from lib.access import Caller

CHAT_PATH = "/v1/chat/completions"
GENERATE_PATH = "/api/generate"
# What a stream's events may pass through on their way out (the response cache's gatherer).
EventsWrap = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]


def build_chat_payload(body: ChatCompletionRequest, model: str) -> dict[str, Any]:
    """The upstream body: what the caller sent, with the resolved model."""
    payload = body.model_dump(exclude_unset=True)
    payload["model"] = model
    return payload


def build_generate_payload(body: GenerateRequest, model: str) -> dict[str, Any]:
    """The chat request that serves a `/api/generate` call."""
    messages = [{"role": "user", "content": body.prompt}]
    if body.system:
        messages.insert(0, {"role": "system", "content": body.system})
    payload: dict[str, Any] = {"model": model, "messages": messages, "stream": body.stream}
    if body.max_tokens is not None:
        payload["max_tokens"] = body.max_tokens
    if body.temperature is not None:
        payload["temperature"] = body.temperature
    if body.stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


async def forward_chat(
    upstream: UpstreamClient, payload: dict[str, Any], call: UpstreamCall, caller: Caller
) -> UpstreamReply:
    """Send a chat completion, check that the answer is one, and count its tokens."""
    reply = await upstream.post_json(CHAT_PATH, payload, call)
    _check_chat_completion(reply.data)
    await caller.charge(
        reply.data.get("usage"), payload=payload, answer_chars=_answer_chars(reply.data)
    )
    return reply


async def stream_chat(
    upstream: UpstreamClient,
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
    *,
    wrap: EventsWrap | None = None,
) -> EventStreamResponse:
    """Open a streamed chat completion; return the response that relays its events (through
    `wrap`, when given).

    The upstream is always asked for the usage chunk, so that the tokens can be counted;
    the caller sees it only if they asked for it too.
    """
    options = payload.get("stream_options") or {}
    show_usage = options.get("include_usage") is True
    payload["stream_options"] = {**options, "include_usage": True}
    stream = await upstream.open_stream(CHAT_PATH, payload, call)
    events = relay_chat_events(stream, caller, payload, show_usage=show_usage)
    return EventStreamResponse(wrap(events) if wrap else events, stream)


async def generate_text(
    upstream: UpstreamClient, payload: dict[str, Any], call: UpstreamCall, caller: Caller
) -> GenerateResponse:
    """Serve `/api/generate` from one chat completion."""
    reply = await forward_chat(upstream, payload, call, caller)
    return generate_answer(reply.data, payload["model"])


def generate_answer(data: dict[str, Any], model: str) -> GenerateResponse:
    """`/api/generate`'s answer from a chat completion (checked to be one)."""
    choice = data["choices"][0]
    content = (choice.get("message") or {}).get("content")
    finish_reason = choice.get("finish_reason")
    return GenerateResponse(
        model=model,
        text=_valid_unicode(content) if isinstance(content, str) else "",
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=_usage_from(data.get("usage")),
    )


async def stream_generated_text(
    upstream: UpstreamClient,
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
    *,
    wrap: EventsWrap | None = None,
) -> EventStreamResponse:
    """Open a streamed `/api/generate` call: text deltas as SSE events (through `wrap`)."""
    stream = await upstream.open_stream(CHAT_PATH, payload, call)
    events = relay_generate_events(stream, caller, payload)
    return EventStreamResponse(wrap(events) if wrap else events, stream)


def _check_chat_completion(data: Any) -> None:
    choices = data.get("choices") if isinstance(data, dict) else None
    if (
        not isinstance(choices, list)
        or not choices
        or not isinstance(choices[0], dict)
        or not isinstance(choices[0].get("message", {}), dict)
        or not isinstance(data.get("usage") or {}, dict)
    ):
        raise UpstreamError("The upstream answered with something that is not a chat completion.")


def _answer_chars(data: dict[str, Any]) -> int:
    """The characters of text in every choice (content and tool call arguments)."""
    chars = 0
    for choice in data["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str):
            chars += len(message["content"])
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str):
                chars += len(arguments)
    return chars


def _valid_unicode(text: str) -> str:
    """`text` with any lone surrogate (an upstream's `\\ud800`) as `?`, so it encodes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="replace").decode()
    return text


def _usage_from(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    counts = {k: v for k, v in usage.items() if k in Usage.model_fields and isinstance(v, int)}
    return Usage(**counts)
