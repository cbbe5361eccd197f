"""App factories for uvicorn (`--factory`): the proxy from `create_app`, on another transport.

They use only `create_app`'s `transport` parameter, so they measure a candidate transport
without editing lib/. Settings come from the environment, as in production.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from fastapi import FastAPI

from lib.app import create_app

_KEEPALIVE = int(os.environ.get("BENCH_MAX_KEEPALIVE", "200"))
_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=_KEEPALIVE)


def proxy_with_aiohttp() -> FastAPI:
    """The proxy, its upstream calls made by httpx's API over the aiohttp transport."""
    from httpx_aiohttp import AiohttpTransport

    return create_app(transport=AiohttpTransport(limits=_LIMITS))


def proxy_with_httpx_pool() -> FastAPI:
    """The proxy on httpx's default transport, with `BENCH_MAX_KEEPALIVE` idle connections kept."""
    return create_app(transport=httpx.AsyncHTTPTransport(limits=_LIMITS))


def proxy_without_ledger() -> FastAPI:
    """The proxy from the environment with the usage ledger's write left out: limits alone,
    so one run measures what the ledger adds (bench/limits.py)."""
    app = create_app()
    limiter = app.state.services.access.limiter

    async def settle_only(entry: object, settlement: Any = None) -> None:
        # What limits alone do as a request ends: settle its reservation, on its own.
        if settlement is not None:
            await limiter.settle(*settlement)

    # The instance's method, not the class's: nothing else in this process is touched.
    app.state.services.access.ledger.record = settle_only
    return app
