"""A stand-in for Hugging Face's inference router, for offline development and tests.

It answers the routes promptgate calls with the shapes the real router answers, and
records what it received so tests can check what reached "the upstream":
    POST /v1/chat/completions                        hub-docs `tasks/chat-completion.md`
    POST /v1/responses                               lib/standin_responses.py
    POST /hf-inference/models/{m}/pipeline/feature-extraction   one vector per input
    POST /hf-inference/models/{m}/pipeline/{task}    that task (`lib/standin_tasks.py`)
    POST /hf-inference/models/{m}                    the model's task, guessed from its name
With `StandinState(api="openai")` it is an OpenAI-compatible model server instead (vLLM,
Ollama, TGI/TEI): the same chat routes, `POST /v1/embeddings` (OpenAI's list shape, floats or
base64) and no hf-inference routes. With `token=None` it takes requests without a token.
Errors are the ones listed in the platform notes ("Errors seen"). A model whose name
holds "missing" is unknown (404, text/plain, as hf-inference answers). Given tools, a
chat request (not streamed) gets a call of the first one; asked for JSON, JSON that fits
the schema (lib/standin_structured.py), so that clients' tool and structured loops end.

Faults: tests script them as `Fault`s in `StandinState.faults`, one per request. To try
them by hand, end the last user message (or a task's `inputs` text) with a tag:
    #standin:401 #standin:402 #standin:404 #standin:422 #standin:429 #standin:500 #standin:503
    #standin:notjson   a 200 whose body is not JSON
    #standin:cut       a stream that stops before `data: [DONE]`
    #standin:midError  a stream that sends a TGI-style error event
    #standin:reset     a connection broken mid-body
    #standin:slow      waits `slow_s` seconds before answering
    #standin:drip      streams one event every 0.05 s (a caller can hang up mid-stream)
    #standin:flood     streams 64 KB events without end, until someone hangs up
Never imported by the production app.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from lib.standin_structured import chat_json_answer, chat_tool_call
from lib.standin_tasks import EMBEDDING_DIMENSIONS, guess_task, task_answer
from lib.standin_tasks import text_vector as _vector

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
class Fault:
    """One scripted misbehaviour, applied to the next request that reaches the stand-in."""

    status: int | None = None  # answer this status, with the router's error body for it
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # answer these bytes instead (with `status`, default 200)
    content_type: str = "application/json"
    delay_s: float = 0.0  # wait before the first byte (a hang, when long)
    chunk_delay_s: float | None = None  # wait before each streamed event
    cut_after: int | None = None  # end a stream after N content events, without [DONE]
    error_after: int | None = None  # send a TGI-style error event after N content events
    error_message: str = "CUDA out of memory"  # what that error event says
    flood: bool = False  # stream 64 KB events without end (a caller who stops reading)
    reset_after: int | None = None  # break the connection after N events (or body bytes)


@dataclass
class StreamEnd:
    """How one stream from the stand-in ended: when, and whether it was read to the end."""

    at: float
    completed: bool


@dataclass
class StandinState:
    """What the stand-in was sent, newest last, and how it behaves."""

    token: str | None = STANDIN_TOKEN  # None: no token needed (a local model server)
    api: Literal["hf-router", "openai"] = "hf-router"
    token_delay_s: float = 0.0
    slow_s: float = 5.0
    received: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    stream_ends: list[StreamEnd] = field(default_factory=list)
    hangups: list[float] = field(default_factory=list)  # when a waiting caller went away


def create_standin_app(state: StandinState | None = None) -> Starlette:
    """Build the stand-in router app; pass a `StandinState` to inspect what it received."""
    state = state or StandinState()

    async def refusal(
        request: Request, body: Any, model: str, fault: Fault | None
    ) -> Response | None:
        """What the router would answer instead, if anything: bad token, unknown model, a fault."""
        _record(state, request, body)
        if state.token and request.headers.get("authorization") != f"Bearer {state.token}":
            return _error(401)
        if fault and fault.delay_s and not await _wait_unless_gone(request, fault.delay_s):
            state.hangups.append(time.monotonic())
            return Response(status_code=499)
        if fault and fault.body is not None:
            return Response(
                fault.body, fault.status or 200, fault.headers, media_type=fault.content_type
            )
        if fault and fault.status:
            return _error(fault.status, fault.headers)
        if fault and fault.reset_after is not None and not body.get("stream"):
            return StreamingResponse(_reset_body(fault.reset_after), media_type="application/json")
        if "missing" in model:
            return _error(404)
        return None

    def next_fault(text: str) -> Fault | None:
        return state.faults.pop(0) if state.faults else _fault_from_tag(text, state.slow_s)

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        model = body.get("model") or "unknown"
        fault = next_fault(_last_user_text(body))
        if refused := await refusal(request, body, model, fault):
            return refused
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
            events = _stream_events(state, model, words, body, include_usage, fault or Fault())
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(_completion(model, words, body))

    async def responses(request: Request) -> Response:
        # Imported here: that module builds on this one's `Fault` and `StandinState`.
        from lib.standin_responses import answer_response, responses_input_text

        body = await request.json()
        fault = next_fault(responses_input_text(body))
        model = body.get("model") or "unknown"
        if refused := await refusal(request, body, model, fault):
            return refused
        return answer_response(state, model, body, fault or Fault())

    async def feature_extraction(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("inputs")
        text = inputs if isinstance(inputs, str) else ""
        fault = next_fault(text)
        if refused := await refusal(request, body, request.path_params["model"], fault):
            return refused
        # hf-inference feature extraction (sentence-transformers): one vector per input,
        # a bare vector for a lone string (platform notes, "Feature extraction").
        if isinstance(inputs, str):
            return JSONResponse(_vector(inputs))
        if isinstance(inputs, list) and all(isinstance(x, str) for x in inputs):
            return JSONResponse([_vector(text) for text in inputs])
        return _error(422)

    async def run_task(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("inputs")
        model = request.path_params["model"]
        fault = next_fault(inputs if isinstance(inputs, str) else "")
        if refused := await refusal(request, body, model, fault):
            return refused
        task = request.path_params.get("task") or guess_task(model)
        answer = task_answer(task, inputs, body.get("parameters") or {})
        return _error(422) if answer is None else JSONResponse(answer)

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        fault = next_fault(texts[0] if isinstance(texts, list) and texts else "")
        if refused := await refusal(request, body, body.get("model") or "unknown", fault):
            return refused
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(422)
        return JSONResponse(_openai_embeddings(body.get("model"), texts, body))

    async def list_models(request: Request) -> Response:
        _record(state, request, None)
        return JSONResponse(
            {"object": "list", "data": [{"id": "HuggingFaceTB/SmolLM3-3B", "object": "model"}]}
        )

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
    if state.api == "openai":
        routes.append(Route("/v1/embeddings", embeddings, methods=["POST"]))
    else:
        routes += [
            Route(
                "/hf-inference/models/{model:path}/pipeline/feature-extraction",
                feature_extraction,
                methods=["POST"],
            ),
            Route("/hf-inference/models/{model:path}/pipeline/{task}", run_task, methods=["POST"]),
            Route("/hf-inference/models/{model:path}", run_task, methods=["POST"]),
        ]
    app = Starlette(routes=routes)
    app.state.standin = state
    return app


def _openai_embeddings(model: Any, texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's embeddings list, as vLLM and Ollama answer it; `dimensions` shortens vectors."""
    width = body.get("dimensions") or EMBEDDING_DIMENSIONS
    vectors = [_vector(text)[:width] for text in texts]
    if body.get("encoding_format") == "base64":
        encoded: list[Any] = [
            base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors
        ]
    else:
        encoded = vectors
    tokens = sum(len(text.split()) for text in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(encoded)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


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


def _error(status: int, extra_headers: dict[str, str] | None = None) -> Response:
    media_type, content = _ERRORS.get(status, ("application/json", {"error": f"status {status}"}))
    headers = {"x-request-id": uuid.uuid4().hex, **(extra_headers or {})}
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


def _fault_from_tag(text: str, slow_s: float) -> Fault | None:
    _, found, tag = text.rstrip().rpartition("#standin:")
    if not found:
        return None
    if tag.isdigit():
        return Fault(status=int(tag), headers={"Retry-After": "7"} if tag == "429" else {})
    return {
        "slow": Fault(delay_s=slow_s),
        "drip": Fault(chunk_delay_s=0.05),
        "flood": Fault(flood=True),
        "notjson": Fault(body=b"<html>upstream proxy error</html>", content_type="text/html"),
        "cut": Fault(cut_after=2),
        "midError": Fault(error_after=2),
        "reset": Fault(reset_after=2),
    }.get(tag)


async def _wait_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the caller disconnects."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, left))
    return True


async def _reset_body(after: int) -> AsyncIterator[bytes]:
    yield b'{"choices": ['[:after]
    # Raising mid-body makes the server drop the connection: the client sees a reset.
    raise ConnectionResetError("stand-in: connection reset mid-body")


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
