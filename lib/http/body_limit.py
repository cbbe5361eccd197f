"""Limits on a request body, its size and its arrival time, enforced without reading it whole."""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The server cannot keep the connection after a refused, unread body: say so.
_CLOSE = {"Connection": "close"}


class BodyLimitMiddleware:
    """Raise a 413 `HTTPException` when the body exceeds `max_bytes`, a 408 when it is slow.

    A declared `Content-Length` over the limit is refused at the first read, before any
    byte is taken; a chunked body is counted as it arrives. The whole body must arrive
    within `timeout_s` of the request's start, so a caller who drips it cannot hold a
    connection and its buffer. The app factory's handler table turns the exceptions into
    the error shape.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received = 0
        complete = False

        async def receive_within_limit() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            if declared is not None and declared > self.max_bytes:
                raise HTTPException(413, headers=_CLOSE)
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, headers=_CLOSE) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, headers=_CLOSE)
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, receive_within_limit, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
