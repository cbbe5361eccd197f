"""The floor: the least a FastAPI + httpx app can do to forward a POST upstream.

One route, one pooled `AsyncClient`, no validation, no auth, no logging. It passes the
body and the `X-Request-ID` header on, and answers with the upstream's status and bytes
(streamed when the upstream streams). Served by uvicorn like the proxy:

    BENCH_UPSTREAM_URL=http://127.0.0.1:8080 uvicorn bench.reference_forwarder:app

`BENCH_TRANSPORT=aiohttp` uses httpx's API over the aiohttp transport (httpx-aiohttp).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

UPSTREAM_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8080")
TRANSPORT = os.environ.get("BENCH_TRANSPORT", "httpx")
# Enough keep-alive connections for the highest concurrency measured, so none churn.
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200)


def _transport() -> httpx.AsyncBaseTransport | None:
    if TRANSPORT == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=LIMITS)
    return None


_client = httpx.AsyncClient(
    base_url=UPSTREAM_URL, transport=_transport(), limits=LIMITS, timeout=60.0
)


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await _client.aclose()


app = FastAPI(lifespan=_lifespan, openapi_url=None)


@app.post("/v1/{path:path}")
async def forward(path: str, request: Request) -> Response:
    """Send the body to the same path upstream; relay the answer, streamed if it streams."""
    headers = {"Content-Type": "application/json"}
    if request_id := request.headers.get("x-request-id"):
        headers["X-Request-ID"] = request_id
    upstream_request = _client.build_request(
        "POST", f"/v1/{path}", content=await request.body(), headers=headers
    )
    response = await _client.send(upstream_request, stream=True)
    media_type = response.headers.get("content-type")
    if media_type and media_type.startswith("text/event-stream"):
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            media_type=media_type,
            background=BackgroundTask(response.aclose),
        )
    try:
        content = await response.aread()
    finally:
        await response.aclose()
    return Response(content, status_code=response.status_code, media_type=media_type)
