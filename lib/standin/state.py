"""What the stand-in was sent, and how it misbehaves: scripted `Fault`s and `#standin:` tags,
and the router's own error bodies (platform notes, "Errors seen")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

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
    cut_before_first: bool = False  # answer 200, then break the connection before a byte


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
    # Faults by model, applied to every request for it (before `faults`): a model that is down.
    model_faults: dict[str, Fault] = field(default_factory=dict)
    stream_ends: list[StreamEnd] = field(default_factory=list)
    hangups: list[float] = field(default_factory=list)  # when a waiting caller went away


def record(state: StandinState, request: Request, body: Any) -> None:
    """Note what reached the stand-in (the newest 200 requests are kept)."""
    state.received.append(
        {
            "method": request.method,
            "path": request.url.path,
            "headers": dict(request.headers),
            "json": body,
        }
    )
    del state.received[:-200]


def error_response(status: int, extra_headers: dict[str, str] | None = None) -> Response:
    """The router's answer for an error `status`, with its body and content type."""
    media_type, content = _ERRORS.get(status, ("application/json", {"error": f"status {status}"}))
    headers = {"x-request-id": uuid.uuid4().hex, **(extra_headers or {})}
    if media_type == "text/plain":
        return PlainTextResponse(content, status_code=status, headers=headers)
    return JSONResponse(content, status_code=status, headers=headers)


def fault_from_tag(text: str, slow_s: float) -> Fault | None:
    """The fault a `#standin:<tag>` at the end of `text` asks for, if any."""
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
        "cutFirst": Fault(cut_before_first=True),
        "midError": Fault(error_after=2),
        "reset": Fault(reset_after=2),
    }.get(tag)


async def wait_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the caller disconnects."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, left))
    return True


async def reset_body(after: int) -> AsyncIterator[bytes]:
    """A body that breaks its connection after `after` bytes."""
    yield b'{"choices": ['[:after]
    # Raising mid-body makes the server drop the connection: the client sees a reset.
    raise ConnectionResetError("stand-in: connection reset mid-body")
