"""Cancel a request's work the moment its caller hangs up.

Without this, a caller that gives up during a long generation leaves the proxy waiting
on the router, which keeps generating (and billing) for nobody. Once the request body
has been read, a watcher waits for `http.disconnect` and cancels the handler, whose
upstream response is then closed, connection and all.
"""

from __future__ import annotations

import asyncio

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnectMiddleware:
    """Cancel POST handlers when the client disconnects; mark it in the request state.

    The handler keeps a working `receive`: after the watcher has taken the disconnect
    message, it is handed on to whoever asks next (Starlette's streaming response does).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # asyncio's, not anyio's: anyio.Event() looks up the running backend on every
        # request, which measured 3.5% of the proxy's CPU under load (bench/profile.py).
        hung_up = asyncio.Event()
        disconnect: Message = {"type": "http.disconnect"}
        watcher: asyncio.Task[None] | None = None
        body_read = responded = False

        with anyio.CancelScope() as cancel_scope:

            async def watch() -> None:
                nonlocal disconnect
                disconnect = await receive()
                hung_up.set()
                # Servers also report a disconnect once the response is complete.
                if not responded:
                    scope.setdefault("state", {})["client_disconnected"] = True
                    cancel_scope.cancel()

            async def receive_for_app() -> Message:
                nonlocal body_read, watcher
                if body_read:
                    await hung_up.wait()
                    return disconnect
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_read = True
                    watcher = asyncio.get_running_loop().create_task(watch())
                return message

            async def send_and_note_end(message: Message) -> None:
                nonlocal responded
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    responded = True
                await send(message)

            try:
                await self.app(scope, receive_for_app, send_and_note_end)
            finally:
                if watcher is not None:
                    watcher.cancel()
