"""Request ids and the one JSON access-log line per request.

The line holds the request id, method, route, model, statuses, latency and whether the
answer streamed. It never holds prompt text, headers, keys or the token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER_NAME = "promptgate"
# Short, printable and free of separators, so it is safe to log and to send upstream.
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def configure_logging(level: str) -> logging.Logger:
    """Send promptgate's log lines, bare, to stdout (where serverless platforms collect them).

    uvicorn's own access log is silenced wherever uvicorn serves the app (containers, `make
    dev`, Vercel's runtime): it writes raw query strings, keys included, and a second line.
    """
    uvicorn_access = logging.getLogger("uvicorn.access")
    # A filter, not `disabled`: logging.config (uvicorn's set-up) re-enables what it configures.
    if _drop_all not in uvicorn_access.filters:
        uvicorn_access.addFilter(_drop_all)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_promptgate", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._promptgate = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


def _drop_all(record: logging.LogRecord) -> bool:
    return False


class RequestContextMiddleware:
    """Gives each request an id, returns it as `X-Request-ID`, and logs the request once done.

    Routes put their `UpstreamCall`, `stream` and `access` record on `request.state` for the
    log line, and headers every response must carry (rate limits) in `response_headers`.
    """

    def __init__(
        self, app: ASGIApp, logger: logging.Logger, on_end: ResponseEndHook | None = None
    ) -> None:
        self.app = app
        self.logger = logger
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status: int | None = None
        id_header = (b"x-request-id", request_id.encode())

        ended = self.on_end is None

        async def end() -> None:
            nonlocal ended
            ended = True
            assert self.on_end is not None
            final = status or (499 if state.get("client_disconnected") else 500)
            await self.on_end(state, final, time.perf_counter() - started)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if not ended and message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await end()  # before the last byte: counted before the caller has it
            elif message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name == b"x-request-id" for name, _ in headers):
                    headers.append(id_header)
                if extra := state.get("response_headers"):
                    present = {name for name, _ in headers}
                    headers += [
                        (name.encode(), value.encode())
                        for name, value in extra.items()
                        if name.encode() not in present
                    ]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not ended:  # the response never ended: a hang-up, or a failure mid-stream
                await end()
            if self.logger.isEnabledFor(logging.INFO):
                self.logger.info(_format_line(scope, state, status, started))


# Called once per request as its response ends (before its last body message is sent), or
# after the app returns when it never ended: with the request state, the status (499 for a
# caller who hung up before an answer, 500 for none) and the seconds since it began.
ResponseEndHook = Callable[[dict[str, Any], int, float], Awaitable[None]]


def _request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _SANE_REQUEST_ID.match(value):
                return value.decode()
            break
    # 128 random bits as 32 hex digits, like uuid4().hex at a fifth of its cost.
    return os.urandom(16).hex()


def _format_line(scope: Scope, state: dict, status: int | None, started: float) -> str:
    route = scope.get("route")
    call = state.get("upstream_call")
    access = state.get("access")
    return json.dumps(
        {
            "request_id": state["request_id"],
            "method": scope["method"],
            "route": getattr(route, "path", None) or "unmatched",
            "model": call and call.model,
            "status": status or (499 if state.get("client_disconnected") else 500),
            "upstream_status": call and call.status,
            "attempts": call and call.attempts,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "stream": state.get("stream", False),
            "client_disconnected": state.get("client_disconnected", False),
            "caller_stalled": state.get("caller_stalled", False),
            "key": access and access.key,
            "user": access and access.user,
            "prompt_tokens": access and access.prompt_tokens,
            "completion_tokens": access and access.completion_tokens,
            "limited_by": access and access.refused_by,
            "cache": getattr(access, "cache", None),
        },
        separators=(",", ":"),
    )
