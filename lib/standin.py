"""A stand-in for Hugging Face's inference router, for offline development and tests.

It answers the routes promptgate calls with the shapes the real router answers, and
records what it received so tests can check what reached "the upstream":
    POST /v1/chat/completions                        hub-docs `tasks/chat-completion.md`
    POST /hf-inference/models/{m}/pipeline/feature-extraction   one vector per input
    POST /hf-inference/models/{m}                    the model's task, guessed from its name
Errors are the ones listed in the platform notes ("Errors seen"). A model whose name
holds "missing" is unknown (404, text/plain, as hf-inference answers).

Faults, for trying the error paths by hand: end the last user message (or a task's
`inputs` text) with a tag.
    #standin:401 #standin:402 #standin:404 #standin:422 #standin:429 #standin:500 #standin:503
    #standin:notjson   a 200 whose body is not JSON
    #standin:cut       a stream that stops before `data: [DONE]`
    #standin:midError  a stream that sends a TGI-style error event
    #standin:slow      waits `slow_s` seconds before answering
Never imported by the production app.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
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

    async def refusal(request: Request, body: Any, model: str, text: str) -> Response | None:
        """The error the router would answer instead, if any: bad token, unknown model, a fault."""
        _record(state, request, body)
        if request.headers.get("authorization") != f"Bearer {state.token}":
            return _error(401)
        fault = _fault_tag(text)
        if fault == "slow":
            await asyncio.sleep(state.slow_s)
        elif fault == "notjson":
            return PlainTextResponse("<html>upstream proxy error</html>", status_code=200)
        elif fault.isdigit():
            return _error(int(fault), retry_after="7" if fault == "429" else None)
        if "missing" in model:
            return _error(404)
        return None

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        model = body.get("model") or "unknown"
        if refused := await refusal(request, body, model, _last_user_text(body)):
            return refused
        words = _answer_words(body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            fault = _fault_tag(_last_user_text(body))
            events = _stream_events(state, model, words, body, include_usage, fault)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(_completion(model, words, body))

    async def feature_extraction(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("inputs")
        text = inputs if isinstance(inputs, str) else ""
        if refused := await refusal(request, body, request.path_params["model"], text):
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
        if refused := await refusal(
            request, body, model, inputs if isinstance(inputs, str) else ""
        ):
            return refused
        if not isinstance(inputs, str):
            return _error(422)
        return JSONResponse(_task_answer(model, inputs, body.get("parameters") or {}))

    async def list_models(request: Request) -> Response:
        _record(state, request, None)
        return JSONResponse(
            {"object": "list", "data": [{"id": "HuggingFaceTB/SmolLM3-3B", "object": "model"}]}
        )

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route(
                "/hf-inference/models/{model:path}/pipeline/feature-extraction",
                feature_extraction,
                methods=["POST"],
            ),
            Route("/hf-inference/models/{model:path}", run_task, methods=["POST"]),
        ]
    )
    app.state.standin = state
    return app


EMBEDDING_DIMENSIONS = 384


def _vector(text: str) -> list[float]:
    """A deterministic unit vector for `text`, 384 wide like all-MiniLM-L6-v2."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [(seed[i % 32] - 127.5) / 127.5 + i / 1000 for i in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [round(x / norm, 6) for x in raw]


def _task_answer(model: str, text: str, parameters: dict[str, Any]) -> Any:
    """What hf-inference answers for the model's task, guessed from the model's name.

    Shapes: huggingface.js `packages/tasks/src/tasks/<task>/spec/output.json`, as the
    official clients parse them (text classification comes back nested one level).
    """
    name = model.lower()
    if "sentiment" in name or "sst" in name or "classif" in name:
        positive = 0.9 if "love" in text.lower() or "good" in text.lower() else 0.2
        labels = [
            {"label": "POSITIVE", "score": positive},
            {"label": "NEGATIVE", "score": round(1 - positive, 6)},
        ]
        labels.sort(key=lambda item: -item["score"])
        return [labels[: parameters.get("top_k") or 2]]
    if "summar" in name or "bart" in name:
        return [{"summary_text": " ".join(text.split()[:8])}]
    if "ner" in name or "token" in name:
        word = text.split()[0] if text.split() else ""
        return [{"entity_group": "PER", "score": 0.99, "word": word, "start": 0, "end": len(word)}]
    said = " ".join(text.split()[:20])
    return [{"generated_text": f"Hello from the stand-in upstream! You said: {said}"}]


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


def _fault_tag(text: str) -> str:
    _, found, tag = text.rstrip().rpartition("#standin:")
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
