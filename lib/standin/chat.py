"""The stand-in's `POST /v1/chat/completions`: an answer that echoes the prompt, plain or
streamed chunk by chunk, with the faults a `Fault` scripts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from lib.standin.state import Fault, StandinState, StreamEnd
from lib.standin.structured import chat_json_answer, chat_tool_call


def answer_chat(state: StandinState, model: str, body: dict[str, Any], fault: Fault) -> Response:
    """The answer to a chat request the stand-in accepted: a completion, a tool call, or events."""
    words = _answer_words(body)
    if (json_text := chat_json_answer(body)) is not None:
        words = json_text.split(" ")
    if not body.get("stream") and (tool_call := chat_tool_call(body)):
        completion = _completion(model, words, body)
        choice = completion["choices"][0]
        choice["message"] = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
        choice["finish_reason"] = "tool_calls"
        return JSONResponse(completion)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _stream_events(state, model, words, body, include_usage, fault)
        return StreamingResponse(events, media_type="text/event-stream")
    return JSONResponse(_completion(model, words, body))


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (where `#standin:` tags go)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _answer_words(body: dict[str, Any]) -> list[str]:
    said = " ".join(last_user_text(body).split()[:20])
    words = f"Hello from the stand-in upstream! You said: {said}".split(" ")
    limit = body.get("max_tokens")
    return words[:limit] if isinstance(limit, int) and limit > 0 else words


def _usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(words),
        "total_tokens": prompt + len(words),
    }


def _finish_reason(body: dict[str, Any], words: list[str]) -> str:
    return "length" if body.get("max_tokens") == len(words) else "stop"


def _completion(model: str, words: list[str], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "standin",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": _finish_reason(body, words),
                "logprobs": None,
            }
        ],
        "usage": _usage(body, words),
    }


async def _stream_events(
    state: StandinState,
    model: str,
    words: list[str],
    body: dict[str, Any],
    include_usage: bool,
    fault: Fault,
) -> AsyncIterator[bytes]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "standin",
    }

    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return event({**base, "choices": [choice], "usage": None})

    delay = state.token_delay_s if fault.chunk_delay_s is None else fault.chunk_delay_s
    completed = False
    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        while fault.flood:
            yield chunk({"content": "flood " * 10_000}, None)
            await asyncio.sleep(0)
        for i, word in enumerate(words):
            if delay:
                await asyncio.sleep(delay)
            if i == fault.cut_after:
                return
            if i == fault.error_after:
                yield event({"error": {"message": fault.error_message, "http_status_code": 500}})
                return
            if i == fault.reset_after:
                raise ConnectionResetError("stand-in: connection reset mid-stream")
            yield chunk({"content": word if i == 0 else " " + word}, None)
        yield chunk({}, _finish_reason(body, words))
        if include_usage:
            yield event({**base, "choices": [], "usage": _usage(body, words)})
        yield b"data: [DONE]\n\n"
        completed = True
    finally:
        state.stream_ends.append(StreamEnd(time.monotonic(), completed))
