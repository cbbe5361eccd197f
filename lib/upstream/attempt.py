"""One attempt at the upstream, and what its failures mean to the caller.

An attempt sends one request within the request's deadline and comes back with an open
response (status below 400), or with the refusal's status, headers and first bytes. The
functions below turn a refusal or a transport error into the project's `UpstreamError`s.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass

import httpx

from lib.errors import (
    ProxyError,
    UpstreamAuthError,
    UpstreamCreditsError,
    UpstreamError,
    UpstreamModelNotFoundError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from lib.upstream.bodies import MAX_ERROR_BYTES, read_capped
from lib.upstream.call import UpstreamCall
from lib.upstream.connection import Connection, as_httpx_error
from lib.upstream.redaction import Redactor
from lib.upstream.retries import GiveUp, RetryDecision, retry_after_seconds


@dataclass(frozen=True, slots=True)
class Refusal:
    """An attempt the upstream refused: its status, headers and the first bytes of its body."""

    status: int
    headers: httpx.Headers
    content: bytes


async def attempt(
    connection: Connection, request: httpx.Request, call: UpstreamCall, until: float | None = None
) -> httpx.Response | Refusal:
    """Send `request` once, before the call's deadline (or `until`, when sooner); `call.status`
    records the answer's.

    Raises `TimeoutError` past the deadline and httpx's errors for a failed connection.
    """
    async with asyncio.timeout_at(call.deadline if until is None else until):
        response = await connection.send(request)
        call.status = response.status_code
        if response.status_code < 400:
            return response
        try:
            content = await read_capped(response, MAX_ERROR_BYTES, truncate=True)
        finally:
            await response.aclose()
    return Refusal(response.status_code, response.headers, content)


def error_for_refusal(
    refusal: Refusal, model: str, redactor: Redactor, credential: str = "HF_TOKEN"
) -> UpstreamError:
    """The error the caller gets for a refusal the proxy does not (or no longer) retry;
    `credential` names the setting that holds the token this upstream was sent."""
    status, headers = refusal.status, refusal.headers
    if status in (401, 403):
        return UpstreamAuthError(
            "The upstream refused this server's credentials; the operator must check "
            f"{credential}. This is not the caller's fault.",
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
        reason = redactor.reason(_upstream_message(refusal.content, headers))
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


def transport_error(exc: httpx.HTTPError) -> ProxyError:
    """The error the caller gets for a connection that failed or broke."""
    exc = as_httpx_error(exc)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError("The upstream timed out.")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("Could not connect to the upstream.")
    return UpstreamError("The connection to the upstream failed.")


def with_retry_advice[E: ProxyError](error: E, decision: RetryDecision) -> E:
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
