"""The connection to the upstream: which transport carries requests, and how each is built.

Requests are httpx's, handed straight to a transport (`UPSTREAM_TRANSPORT`): promptgate's
own (`lib.upstream.http11`: asyncio protocols and httptools' C parser, the least CPU per
call of the three); httpx's pool; aiohttp's, which adds 110-130 ms to an instance's
first call; or the one given (tests pass `httpx.MockTransport`). Skipping `AsyncClient.send`
saves its cookie jar and redirect handling, which a proxy does not use
(bench/performance.md).
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from lib import __version__
from lib.errors import NotConfiguredError
from lib.settings import Settings

# Each request in flight holds at most one connection, and only until its deadline, so the
# pool needs no cap of its own: a cap would let callers who stop reading their streams
# starve everyone else of connections. Idle ones are kept for as many as may be in flight.
_POOL_LIMITS = httpx.Limits(max_connections=100_000, max_keepalive_connections=200)
# Parsed URLs kept per path (task routes put model ids in paths, so the number is bounded).
_MAX_CACHED_URLS = 256


class Connection:
    """The pooled transport to the upstream, and the requests it carries.

    The pool is bound to the event loop that first uses it; a new loop (a test, or a
    runtime that replaced its loop) gets a new pool instead of "Event loop is closed".
    """

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._base_url = settings.hf_base_url
        self.token = settings.hf_token.get_secret_value() if settings.hf_token else None
        # The router always wants a token; an OpenAI-compatible server may want none (Ollama).
        self._token_required = settings.upstream_api == "hf-router"
        self._given_transport = transport
        self._transport_kind = settings.upstream_transport
        self._transport: httpx.AsyncBaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, httpx.URL] = {}
        timeout_s = settings.request_timeout_s
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self._extensions = {"timeout": timeout.as_dict()}
        self._fixed_headers = [
            (b"Host", httpx.URL(self._base_url).netloc),
            (b"Content-Type", b"application/json"),
            (b"Accept", b"application/json, text/event-stream"),
            (b"Accept-Encoding", b"gzip, deflate"),
            (b"User-Agent", f"promptgate/{__version__}".encode()),
        ]
        if self.token is not None:
            self._fixed_headers.append((b"Authorization", f"Bearer {self.token}".encode()))

    def build_request(self, path: str, body: bytes, request_id: str) -> httpx.Request:
        """A POST of the JSON `body` to `path`, with the server's token; raises
        `NotConfiguredError` when the router needs a token and none is set."""
        if self.token is None and self._token_required:
            raise NotConfiguredError(
                "This deployment has no Hugging Face token: set HF_TOKEN in the server's "
                "environment (for local development, unset it to use the stand-in upstream)."
            )
        url = self._urls.get(path)
        if url is None:
            # Parsing a URL is a fifth of building a request; the paths repeat, so keep them.
            url = httpx.URL(self._base_url + path)
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[path] = url
        # Raw header pairs, Host and Content-Length included: httpx then has nothing to
        # normalise or add, which is a sixth of building a request (bench/profile.py).
        headers = [
            *self._fixed_headers,
            (b"X-Request-ID", request_id.encode()),
            (b"Content-Length", str(len(body)).encode()),
        ]
        return httpx.Request(
            "POST", url, content=body, headers=headers, extensions=self._extensions
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send `request` on this loop's pool; the response body streams."""
        return await self._transport_for_loop().handle_async_request(request)

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        if self._transport is not None:
            transport, self._transport, self._loop = self._transport, None, None
            await transport.aclose()

    def _transport_for_loop(self) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        if self._transport is None or self._loop is not loop:
            self._transport = self._given_transport or self._default_transport()
            self._loop = loop
        return self._transport

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        if self._transport_kind == "builtin":
            # Imported by the first upstream call, with httptools: not by `import api.index`.
            from lib.upstream.http11 import Http11Transport

            return Http11Transport()
        if self._transport_kind == "httpx":
            return httpx.AsyncHTTPTransport(limits=_POOL_LIMITS)
        return _aiohttp_transport()


def _aiohttp_transport() -> httpx.AsyncBaseTransport:
    # Imported on first use, so that `import api.index` (every cold start) does not pay for
    # aiohttp (tests/test_import_footprint.py); the first upstream call does instead.
    from httpx_aiohttp import AiohttpTransport

    return _HttpxErrorsTransport(AiohttpTransport(limits=_POOL_LIMITS))


class _HttpxErrorsTransport(httpx.AsyncBaseTransport):
    """Another transport, raising the errors httpx's own transport raises for the same fault."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the response body streams."""
        try:
            return await self._transport.handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            raise as_httpx_error(exc) from exc.__cause__

    async def aclose(self) -> None:
        """Close the pool."""
        await self._transport.aclose()


def as_httpx_error(exc: httpx.HTTPError) -> httpx.HTTPError:
    """The error httpx's own transport would raise for what went wrong.

    httpx-aiohttp reports every aiohttp connection error as ConnectTimeout, refused and
    dropped connections included; what aiohttp raised (the cause) tells what happened.
    """
    aiohttp = sys.modules.get("aiohttp")  # loaded if, and only if, it raised
    cause = exc.__cause__
    if (
        aiohttp is None
        or not isinstance(cause, aiohttp.ClientConnectionError)
        or isinstance(cause, TimeoutError)
    ):
        return exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause))
    return httpx.RemoteProtocolError(str(cause))
