"""AWS Lambda: Mangum around the app, on one event loop kept across warm invocations."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI


class LambdaHandler:
    """Call it with a Lambda event (API Gateway REST or HTTP API, Function URL) and context.

    Mangum runs the app on the thread's current event loop. An `asyncio.run()` anywhere in
    the process (another library, earlier code) leaves none set, and Mangum then fails with
    "There is no current event loop"; so each call first makes this handler's own loop
    current. Keeping one loop also keeps the upstream connection pool alive while warm.
    """

    def __init__(self, app: FastAPI, *, api_gateway_base_path: str = "/") -> None:
        self._app = app
        self._base_path = api_gateway_base_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mangum: Any = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Serve one event and return the response Lambda expects."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        if self._mangum is None:
            from mangum import Mangum  # only Lambda pays for importing it

            self._mangum = Mangum(self._app, lifespan="off", api_gateway_base_path=self._base_path)
        return self._mangum(event, context)
