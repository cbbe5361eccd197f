"""A stand-in for Hugging Face's inference router, for offline development and tests.

It answers the routes promptgate calls with the shapes the real router answers
(hub-docs `tasks/chat-completion.md`; errors as listed in the platform notes), and
records what it received so tests can check what reached "the upstream".

Faults, for trying the error paths by hand: end the last user message with a tag.
    #standin:401 #standin:402 #standin:404 #standin:422 #standin:429 #standin:500 #standin:503
    #standin:notjson   a 200 whose body is not JSON
    #standin:cut       a stream that stops before `data: [DONE]`
    #standin:midError  a stream that sends a TGI-style error event
    #standin:slow      waits `slow_s` seconds before answering
Never imported by the production app.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

STANDIN_TOKEN = "hf_standin_local_token_not_a_secret"

# Error bodies as the router sends them (platform notes, "Errors seen").
_ERRORS: dict[int, tuple[str, Any]] = {
    401: ("application/json", {"error": "Invalid credentials in Authorization header"}),
    402: (
        "application/json",
        {"error": "You have depleted your monthly included credits. Purchase pre-paid credits."},
    ),
    404: ("text/plain", "Not Found"),
    422: ("application/json", {"error": "Input validation error", "error_type": "validation"}),
    429: ("application/json", {"error": "Too many requests, please retry later."}),
    500: ("application/json", {"error": "Internal server error"}),
    503: ("application/json", {"error": "Model is currently loading", "estimated_time": 20.0}),
}


@dataclass
class StandinState:
    """What the stand-in was sent, newest last, and how it behaves."""

    token: str = STANDIN_TOKEN
    token_delay_s: float = 0.0
    slow_s: float = 5.0
    received: list[dict[str, Any]] = field(default_factory=list)


def create_standin_app(state: StandinState | None = None) -> Starlette:
    """Build the stand-in router app; pass a `StandinState` to inspect what it received."""
    state = state or StandinState()

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        _record(state, request, body)
        if request.headers.get("authorization") != f"Bearer {state.token}":
            return _error(401)
        fault = _fault_in(body)
        if fault == "slow":
            await asyncio.sleep(state.slow_s)
        elif fault == "notjson":
            return PlainTextResponse("<html>upstream proxy error</html>", status_code=200)
        elif fault.isdigit():
            return _error(int(fault), retry_after="7" if fault == "429" else None)
        model = body.get("model") or "unknown"
        words = _answer_words(body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _stream_events(state, model, words, body, include_usage, fault)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(_completion(model, words, body))

    async def list_models(request: Request) -> Response:
        _record(state, request, None)
        return JSONResponse(
            {"object": "list", "data": [{"id": "HuggingFaceTB/SmolLM3-3B", "object": "model"}]}
        )

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )
    app.state.standin = state
    return app


def _record(state: StandinState, request: Request, body: Any) -> None:
    state.received.append(
        {
            "method": request.method,
            "path": request.url.path,
            "headers": dict(request.headers),
            "json": body,
        }
    )
    del state.received[:-200]


def _error(status: int, retry_after: str | None = None) -> Response:
    media_type, content = _ERRORS.get(status, ("application/json", {"error": f"status {status}"}))
    headers = {"x-request-id": uuid.uuid4().hex}
    if retry_after:
        headers["Retry-After"] = retry_after
    if media_type == "text/plain":
        return PlainTextResponse(content, status_code=status, headers=headers)
    return JSONResponse(content, status_code=status, headers=headers)


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _fault_in(body: dict[str, Any]) -> str:
    text = _last_user_text(body).rstrip()
    _, found, tag = text.rpartition("#standin:")
    return tag if found else ""


def _answer_words(body: dict[str, Any]) -> list[str]:
    said = " ".join(_last_user_text(body).split()[:20])
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
    fault: str,
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

    yield chunk({"role": "assistant", "content": ""}, None)
    for i, word in enumerate(words):
        if state.token_delay_s:
            await asyncio.sleep(state.token_delay_s)
        if fault == "cut" and i == 2:
            return
        if fault == "midError" and i == 2:
            yield event({"error": {"message": "CUDA out of memory", "http_status_code": 500}})
            return
        yield chunk({"content": word if i == 0 else " " + word}, None)
    yield chunk({}, _finish_reason(body, words))
    if include_usage:
        yield event({**base, "choices": [], "usage": _usage(body, words)})
    yield b"data: [DONE]\n\n"
