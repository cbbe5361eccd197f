"""The app factory, and the one table that maps exceptions to HTTP responses."""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lib import __version__, inference
from lib.access import RATE_LIMIT_HEADERS, AccessControl
from lib.errors import ProxyError
from lib.http import (
    LOGGER_NAME,
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    RequestContextMiddleware,
    ResponseEndHook,
    configure_logging,
)
from lib.routes import TASK_ROUTE_PREFIX, Services, include_routes, usage_recorder
from lib.schemas import explain_validation_error
from lib.settings import Settings, SettingsError, load_settings
from lib.upstream import UpstreamClient

_DESCRIPTION = """\
A stateless proxy to a small model on Hugging Face's inference router.
The server holds the Hugging Face token; callers use a client key.

Press **Authorize**, paste your client key (not a Hugging Face token), then try a route.
"""

# The `error_type` values huggingface_hub's text generation turns into typed exceptions.
_HF_ERROR_TYPES = {400: "validation", 422: "validation", 424: "generation", 429: "overloaded"}

# Starlette's own HTTP errors: status -> (type, code).
_HTTP_ERRORS = {
    404: ("not_found_error", "not_found"),
    408: ("invalid_request_error", "request_timeout"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def create_app(
    settings: Settings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the ASGI app. `settings` default to the environment; `transport` replaces httpx's;
    `clock` (epoch seconds) decides the limits' minutes and days."""
    settings = settings or load_settings()
    logger = configure_logging(settings.log_level)
    upstream = UpstreamClient(settings, transport=transport)
    fallback_settings = settings.fallback_upstream_settings()
    fallback_upstream = (
        None
        if fallback_settings is None
        else UpstreamClient(fallback_settings, transport, credential="UPSTREAM_FALLBACK_TOKEN")
    )
    access = AccessControl(settings, clock=clock, logger=logger)
    on_end = usage_recorder(access.ledger)
    tracer = None
    if settings.traces_endpoint is not None:  # the OpenTelemetry SDK is imported only then
        from lib.tracing import Tracer

        tracer = Tracer(settings)
        on_end = _both(on_end, tracer.record)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await upstream.aclose()
        if fallback_upstream is not None:
            await fallback_upstream.aclose()
        await access.aclose()
        if tracer is not None:
            await tracer.aclose()

    app = FastAPI(
        title="promptgate",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        exception_handlers=_exception_handlers(),
        docs_url=None,  # lib.routes.pages serves /docs and /redoc from this origin
        redoc_url=None,
        # promptgate's traces are its own (lib/tracing.py, redacted, only when configured).
        # FastAPI's native telemetry would report to any global provider a platform set, and
        # looks its providers up on every request (~1% of a request's CPU, bench/profile.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = Services(
        settings=settings,
        upstream=upstream,
        access=access,
        fallback_upstream=fallback_upstream,
    )
    include_routes(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                *RATE_LIMIT_HEADERS,
                inference.FALLBACK_HEADER,
            ],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(RequestContextMiddleware, logger=logger, on_end=on_end)
    return app


def _both(first: ResponseEndHook, second: ResponseEndHook) -> ResponseEndHook:
    async def both(state: dict[str, Any], status: int, latency_s: float) -> None:
        await first(state, status, latency_s)
        await second(state, status, latency_s)

    return both


def create_app_or_exit() -> FastAPI:
    """`create_app()` from the environment; a bad setting exits with one line naming it."""
    try:
        return create_app()
    except SettingsError as exc:
        raise SystemExit(f"promptgate: {exc}") from None


def error_response(
    request: Request,
    status_code: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in the shape the caller's client reads, carrying the request id.

    `/models/*` (the Hugging Face task routes) answer `{"error": "<message>", "error_type"}`;
    every other route answers the OpenAI shape. Both carry `X-Error-Message`, which the
    Hugging Face client shows first.
    """
    headers = {
        **(headers or {}),
        "X-Request-ID": request.state.request_id,
        "X-Error-Message": _header_safe(message),
    }
    if code == "model_not_found":
        headers["X-Error-Code"] = "RepoNotFound"  # huggingface_hub: RepositoryNotFoundError
    body: dict[str, Any]
    if request.url.path.startswith(TASK_ROUTE_PREFIX):
        body = {"error": message, "error_type": _HF_ERROR_TYPES.get(status_code, error_type)}
    else:
        body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


_WHITESPACE_RUNS = re.compile(r"\s+")


def _header_safe(text: str, limit: int = 300) -> str:
    """`text` as a header value every HTTP parser accepts, h11 included.

    h11 refuses (and drops the connection over) a value with a control character or
    leading or trailing whitespace; non-ASCII goes too. Accents are dropped (`café` reads
    `cafe`), other characters become `?`, whitespace runs become one space, and the cut
    comes before the final strip so the value never ends in a space.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c if c <= "~" else ("" if unicodedata.combining(c) else "?") for c in decomposed)
    kept = "".join(c if c >= " " else " " for c in kept)
    return _WHITESPACE_RUNS.sub(" ", kept).strip()[:limit].rstrip()


async def _handle_proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.should_retry is not None:
        # Read by the openai SDK, so that a client does not repeat the proxy's own retries.
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return error_response(
        request,
        exc.status_code,
        exc.message,
        exc.error_type,
        code=exc.code,
        param=exc.param,
        headers=headers,
    )


async def _handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    param, reason = explain_validation_error(errors, exc.body)
    message = f"Invalid value for '{param}': {reason}" if param else f"Invalid request: {reason}"
    if errors and errors[0].get("type") == "json_invalid":
        message, param = "The request body is not valid JSON.", None
    elif not param and "json" not in request.headers.get("content-type", ""):
        message = "The request body must be JSON, sent with 'Content-Type: application/json'."
    return error_response(
        request, 422, message, "invalid_request_error", code="invalid_value", param=param
    )


async def _handle_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    messages = {
        404: f"No route {request.url.path}; see /docs for the routes.",
        405: f"Method {request.method} is not allowed on {request.url.path}.",
        408: "The request body did not arrive in time (BODY_TIMEOUT_S); send it at once.",
        413: "The request body is larger than this deployment accepts (MAX_BODY_BYTES).",
    }
    message = messages.get(exc.status_code, str(exc.detail))
    error_type, code = _HTTP_ERRORS.get(exc.status_code, ("invalid_request_error", None))
    return error_response(
        request, exc.status_code, message, error_type, code=code, headers=exc.headers
    )


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logging.getLogger(LOGGER_NAME).error(
        "unhandled %s in request %s", type(exc).__name__, request.state.request_id
    )
    return error_response(
        request,
        500,
        "Internal error in the proxy; the request id identifies it in the logs.",
        "server_error",
        code="internal_error",
        headers={"x-should-retry": "false"},
    )


def _exception_handlers() -> dict[type[Exception], Callable[..., Awaitable[JSONResponse]]]:
    return {
        ProxyError: _handle_proxy_error,
        RequestValidationError: _handle_validation_error,
        HTTPException: _handle_http_error,
        Exception: _handle_unexpected,
    }
