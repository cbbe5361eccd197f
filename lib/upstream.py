"""The client for Hugging Face's inference router: the one place that talks HTTP upstream.

Every httpx exception and every upstream failure status is turned into one of the
project's `UpstreamError`s here, so nothing above this module sees httpx's errors.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from lib import __version__
from lib.errors import (
    NotConfiguredError,
    ProxyError,
    UpstreamAuthError,
    UpstreamCreditsError,
    UpstreamError,
    UpstreamModelNotFoundError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from lib.redaction import Redactor
from lib.retries import GiveUp, RetryDecision, RetryPolicy, retry_after_seconds
from lib.settings import Settings

# Far above any chat or embedding answer, far below what would hurt a 2 GB function.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# An error's reason is in its first kilobytes; the rest is not read into memory.
MAX_ERROR_BYTES = 64 * 1024
# Each request in flight holds at most one connection, and only until its deadline, so the
# pool needs no cap of its own: a cap would let callers who stop reading their streams
# starve everyone else of connections. Idle ones are kept for as many as may be in flight.
_POOL_LIMITS = httpx.Limits(max_connections=100_000, max_keepalive_connections=200)
MAX_EVENT_BYTES = 1024 * 1024


@dataclass(slots=True)
class UpstreamCall:
    """One caller request's dealings with the router: its id, and what happened, for the log."""

    request_id: str
    model: str
    attempts: int = 0
    status: int | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A successful, fully read JSON answer from the router."""

    content: bytes
    data: Any


class UpstreamClient:
    """A pooled client for the router, reused across requests and warm invocations.

    Requests are httpx's, handed straight to a transport (`UPSTREAM_TRANSPORT`): httpx's own
    pool, which costs nothing to import; aiohttp's, which costs a third of the CPU per call
    under load but adds 150-220 ms to an instance's first call; or the one given (tests pass
    `httpx.MockTransport`). Skipping `AsyncClient.send` saves its cookie jar and redirect
    handling, which a proxy does not use (bench/performance.md).
    The pool is bound to the event loop that first uses it; a new loop (a test, or a
    runtime that replaced its loop) gets a new pool instead of "Event loop is closed".
    """

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._base_url = settings.hf_base_url
        self._token = settings.hf_token.get_secret_value() if settings.hf_token else None
        self._redactor = Redactor(self._token)
        # The router always wants a token; an OpenAI-compatible server may want none (Ollama).
        self._token_required = settings.upstream_api == "hf-router"
        self._timeout_s = settings.request_timeout_s
        self._idle_timeout_s = settings.stream_idle_timeout_s
        self._retry = RetryPolicy(settings.upstream_max_attempts)
        self._given_transport = transport
        self._urls: dict[str, httpx.URL] = {}
        self._transport_kind = settings.upstream_transport
        self._transport: httpx.AsyncBaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        timeout = httpx.Timeout(self._timeout_s, connect=min(10.0, self._timeout_s))
        self._extensions = {"timeout": timeout.as_dict()}

    async def post_json(
        self, path: str, payload: dict[str, Any], call: UpstreamCall
    ) -> UpstreamReply:
        """POST `payload` to `path` and return the parsed JSON answer, or raise `UpstreamError`."""
        response = await self._send(path, payload, call)
        try:
            async with asyncio.timeout_at(call.deadline):
                content = await _read_capped(response)
        except TimeoutError as exc:
            raise self._timeout_error() from exc
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        finally:
            await response.aclose()
        content = self._redactor.redact_bytes(content)
        try:
            data = parse_json(content)
        except ValueError as exc:
            raise UpstreamError("The upstream answered with a body that is not JSON.") from exc
        return UpstreamReply(content, data)

    async def open_stream(
        self, path: str, payload: dict[str, Any], call: UpstreamCall
    ) -> UpstreamStream:
        """POST `payload` and return the open event stream once the router has said yes.

        Failures, retried or not, are settled before anything reaches the caller.
        """
        response = await self._send(path, payload, call)
        assert call.deadline is not None
        return UpstreamStream(
            response, call.deadline, self._idle_timeout_s, self._timeout_error, self._redactor
        )

    async def _send(self, path: str, payload: dict[str, Any], call: UpstreamCall) -> httpx.Response:
        """Send, retrying what the policy allows; return an open response with a 2xx/3xx status."""
        loop = asyncio.get_running_loop()
        if call.deadline is None:
            call.deadline = loop.time() + self._timeout_s
        body = _encode_json(payload)
        # Counted per send: one request may make several (embedding batches) that share `call`.
        attempt = 0
        while True:
            attempt += 1
            call.attempts += 1
            request = self._build_request(path, body, call.request_id)
            try:
                async with asyncio.timeout_at(call.deadline):
                    response = await self._transport_for_loop().handle_async_request(request)
                    call.status = response.status_code
                    if response.status_code < 400:
                        return response
                    try:
                        content = await _read_capped(response, MAX_ERROR_BYTES, truncate=True)
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                raise self._timeout_error() from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                decision = self._retry.after_connect_error(attempt, call.deadline - loop.time())
                if decision.delay_s is None:
                    raise _with_retry_advice(_transport_error(exc), decision) from exc
            except httpx.HTTPError as exc:
                raise _transport_error(exc) from exc
            else:
                decision = self._retry.after_status(
                    attempt,
                    response.status_code,
                    response.headers,
                    content,
                    call.deadline - loop.time(),
                )
                if decision.delay_s is None:
                    error = self._error_for_status(
                        response.status_code, content, response.headers, call.model
                    )
                    raise _with_retry_advice(error, decision)
            await asyncio.sleep(decision.delay_s)

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        if self._transport is not None:
            transport, self._transport, self._loop = self._transport, None, None
            await transport.aclose()

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        if self._transport_kind == "httpx":
            return httpx.AsyncHTTPTransport(limits=_POOL_LIMITS)
        return _aiohttp_transport()

    def _transport_for_loop(self) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        if self._transport is None or self._loop is not loop:
            self._transport = self._given_transport or self._default_transport()
            self._loop = loop
        return self._transport

    def _build_request(self, path: str, body: bytes, request_id: str) -> httpx.Request:
        if self._token is None and self._token_required:
            raise NotConfiguredError(
                "This deployment has no Hugging Face token: set HF_TOKEN in the server's "
                "environment (for local development, unset it to use the stand-in upstream)."
            )
        url = self._urls.get(path)
        if url is None:
            # Parsing a URL is a fifth of building a request; the paths repeat, so keep them
            # (a bounded number: task routes put model ids in paths).
            url = httpx.URL(self._base_url + path)
            if len(self._urls) < 256:
                self._urls[path] = url
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"promptgate/{__version__}",
            "X-Request-ID": request_id,
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return httpx.Request(
            "POST", url, content=body, headers=headers, extensions=self._extensions
        )

    def _timeout_error(self) -> UpstreamTimeoutError:
        error = UpstreamTimeoutError(
            f"The upstream did not answer within the {self._timeout_s:g} s request deadline."
        )
        return _with_retry_advice(error, self._retry.after_timeout())

    def _error_for_status(
        self, status: int, content: bytes, headers: httpx.Headers, model: str
    ) -> UpstreamError:
        reason = self._redactor.reason(_upstream_message(content, headers))
        if status in (401, 403):
            return UpstreamAuthError(
                "The upstream refused this server's Hugging Face credentials; "
                "the operator must check HF_TOKEN. This is not the caller's fault.",
            )
        if status == 402:
            return UpstreamCreditsError(
                "The server's Hugging Face account has no inference credits left.",
            )
        if status == 404:
            return UpstreamModelNotFoundError(
                f"The model '{model}' was not found upstream.",
                param="model",
            )
        if status in (400, 422):
            return UpstreamRejectedError(
                f"The upstream rejected the request: {reason or 'no reason given'}",
                status_code=status,
            )
        if status == 429:
            # Passed on as whole seconds: the upstream's own text never reaches a header.
            wait = retry_after_seconds(headers.get("retry-after"))
            return UpstreamRateLimitError(
                "The upstream is rate limiting or overloaded; try again later.",
                headers={} if wait is None else {"Retry-After": str(math.ceil(wait))},
            )
        if status in (408, 504):
            return UpstreamTimeoutError("The upstream timed out.")
        return UpstreamError(f"The upstream failed with status {status}.")


class UpstreamStream:
    """An open server-sent event stream from the router.

    `events()` yields each whole event block (its lines, without the blank line that
    ends it), bounded by the request deadline and by an idle limit between chunks;
    `event_batches()` yields the same blocks grouped by the read that completed them.
    Blocks come redacted of the server's token. `deadline` and `idle_timeout_s` also bound
    the relay's sends to the caller (`lib.streaming.EventStreamResponse`).
    """

    def __init__(
        self,
        response: httpx.Response,
        deadline: float,
        idle_timeout_s: float,
        timeout_error: Callable[[], UpstreamTimeoutError],
        redactor: Redactor,
    ) -> None:
        self._response = response
        self.deadline = deadline
        self.idle_timeout_s = idle_timeout_s
        self._timeout_error = timeout_error
        self._redactor = redactor

    async def events(self) -> AsyncIterator[bytes]:
        """Yield event blocks as they arrive; raise `UpstreamError` if the stream breaks."""
        async for blocks in self.event_batches():
            for block in blocks:
                yield block

    async def event_batches(self) -> AsyncIterator[list[bytes]]:
        """Yield, per read from the upstream, the event blocks it completed (none held back)."""
        loop = asyncio.get_running_loop()
        chunks = self._response.aiter_bytes()
        buffer = b""
        while True:
            wait = min(self.idle_timeout_s, self.deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0)):
                    chunk = await anext(chunks, None)
            except TimeoutError as exc:
                raise self._timeout_error() from exc
            except httpx.HTTPError as exc:
                raise UpstreamError("The upstream connection broke mid-stream.") from exc
            if chunk is None:
                break
            buffer += chunk
            if b"\r" in buffer:
                buffer = buffer.replace(b"\r\n", b"\n")
            *blocks, buffer = buffer.split(b"\n\n")
            if len(buffer) > MAX_EVENT_BYTES:
                raise UpstreamError("The upstream sent an event larger than this proxy accepts.")
            if complete := [self._redactor.redact_bytes(b) for b in blocks if b.strip()]:
                yield complete
        if buffer.strip():
            yield [self._redactor.redact_bytes(buffer)]

    def reason(self, text: str) -> str:
        """An upstream's reason, fit for the caller: redacted of the token, then cut."""
        return self._redactor.reason(text)

    async def aclose(self) -> None:
        """Close the upstream response and its connection."""
        await self._response.aclose()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: `json.loads` with a hook would build a decoder per call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(content: bytes) -> Any:
    """Parse an upstream JSON body; `NaN` and `Infinity`, which JSON lacks, are refused.

    Raises `ValueError` (invalid UTF-8 included) for anything that is not JSON.
    """
    return _STRICT_DECODER.decode(content.decode("utf-8-sig"))


def _encode_json(payload: dict[str, Any]) -> bytes:
    try:
        return json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except UnicodeEncodeError:
        # A lone surrogate (lib.request_body refuses them in bodies): as a JSON escape.
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


async def _read_capped(
    response: httpx.Response, limit: int = MAX_RESPONSE_BYTES, *, truncate: bool = False
) -> bytes:
    """The body, up to `limit` bytes: past it, cut (`truncate`) or an `UpstreamError`."""
    size = 0
    parts: list[bytes] = []
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            if truncate:
                parts.append(chunk[: len(chunk) - (size - limit)])
                break
            raise UpstreamError("The upstream answer was larger than this proxy accepts.")
        parts.append(chunk)
    return b"".join(parts)


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
            raise _as_httpx_error(exc) from exc.__cause__

    async def aclose(self) -> None:
        """Close the pool."""
        await self._transport.aclose()


def _as_httpx_error(exc: httpx.HTTPError) -> httpx.HTTPError:
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


def _with_retry_advice[E: ProxyError](error: E, decision: RetryDecision) -> E:
    """Tell the caller's client whether to retry what this proxy gave up on.

    After the proxy's own attempts, the error's default stands (`x-should-retry: false` for
    upstream failures); when it could not wait or does not retry, the client may, after the
    server's hint (`Retry-After`) when there is one.
    """
    if decision.give_up is GiveUp.DEFERRED:
        error.should_retry = None
        if decision.hint_s is not None and "Retry-After" not in error.headers:
            error.headers["Retry-After"] = str(math.ceil(decision.hint_s))
    return error


def _transport_error(exc: httpx.HTTPError) -> ProxyError:
    exc = _as_httpx_error(exc)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError("The upstream timed out.")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("Could not connect to the upstream.")
    return UpstreamError("The connection to the upstream failed.")


def _upstream_message(content: bytes, headers: httpx.Headers) -> str:
    """The reason the router gave, from its JSON `error` or its `X-Error-Message` header."""
    message = headers.get("x-error-message", "")
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str) and error:
            message = error
    return message
