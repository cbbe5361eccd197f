"""The client for Hugging Face's inference router: the one place that talks HTTP upstream.

Every httpx exception and every upstream failure status is turned into one of the
project's `UpstreamError`s in this package, so nothing above it sees httpx's errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from lib.errors import UpstreamError, UpstreamTimeoutError
from lib.settings import Settings
from lib.upstream.attempt import (
    Refusal,
    attempt,
    error_for_refusal,
    transport_error,
    with_retry_advice,
)
from lib.upstream.bodies import encode_json, parse_json, read_capped
from lib.upstream.call import UpstreamCall, UpstreamReply
from lib.upstream.connection import Connection
from lib.upstream.redaction import Redactor
from lib.upstream.retries import RetryPolicy
from lib.upstream.stream import UpstreamStream


class UpstreamClient:
    """A pooled client for the router, reused across requests and warm invocations.

    It retries what the policy allows within the request's one deadline, and answers
    redacted of the server's token (`lib.upstream.connection` carries the requests).
    """

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        credential: str = "HF_TOKEN",
    ) -> None:
        self._connection = Connection(settings, transport)
        self._credential = credential  # the setting an auth refusal tells the operator to check
        self._redactor = Redactor(self._connection.token)
        self._timeout_s = settings.request_timeout_s
        self._idle_timeout_s = settings.stream_idle_timeout_s
        self._retry = RetryPolicy(settings.upstream_max_attempts)
        # A model with a fallback after it gets one attempt, and this long to start answering.
        self._no_retry = RetryPolicy(1)
        self._fallback_timeout_s = settings.fallback_timeout_s

    async def post_json(
        self, path: str, payload: dict[str, Any], call: UpstreamCall
    ) -> UpstreamReply:
        """POST `payload` to `path` and return the parsed JSON answer, or raise `UpstreamError`."""
        response, until = await self._send(path, payload, call)
        try:
            async with asyncio.timeout_at(until):
                content = await read_capped(response)
        except TimeoutError as exc:
            raise self._timeout_error() from exc
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        finally:
            await response.aclose()
        content = self._redactor.redact_bytes(content)
        try:
            data = parse_json(content)
        except ValueError as exc:
            raise UpstreamError("The upstream answered with a body that is not JSON.") from exc
        if isinstance(data, dict) and isinstance(model := data.get("model"), str):
            call.response_model = model[:200]
        return UpstreamReply(content, data)

    async def open_stream(
        self, path: str, payload: dict[str, Any], call: UpstreamCall
    ) -> UpstreamStream:
        """POST `payload` and return the open event stream once the router has said yes.

        Failures, retried or not, are settled before anything reaches the caller; with a
        fallback ready, so is a stream that breaks or stalls before its first event.
        """
        response, until = await self._send(path, payload, call)
        assert call.deadline is not None
        stream = UpstreamStream(
            response, call.deadline, self._idle_timeout_s, self._timeout_error, self._redactor
        )
        if call.fallback_ready:
            try:
                await stream.prime(until)
            except BaseException:
                await stream.aclose()
                raise
        return stream

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        await self._connection.aclose()

    async def _send(
        self, path: str, payload: dict[str, Any], call: UpstreamCall
    ) -> tuple[httpx.Response, float]:
        """Send, retrying what the policy allows; return an open response with a 2xx/3xx
        status, and the time its answer must start by (the deadline, or sooner with a
        fallback ready)."""
        loop = asyncio.get_running_loop()
        if call.deadline is None:
            call.deadline = loop.time() + self._timeout_s
        retry, until = self._retry, call.deadline
        if call.fallback_ready:
            retry, until = self._no_retry, min(until, loop.time() + self._fallback_timeout_s)
        body = encode_json(payload)
        # Counted per send: one request may make several (embedding batches) that share `call`.
        tries = 0
        while True:
            tries += 1
            call.attempts += 1
            request = self._connection.build_request(path, body, call.request_id)
            try:
                outcome = await attempt(self._connection, request, call, until)
            except TimeoutError as exc:
                raise self._timeout_error() from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                decision = retry.after_connect_error(tries, call.deadline - loop.time())
                if decision.delay_s is None:
                    raise with_retry_advice(transport_error(exc), decision) from exc
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            else:
                if not isinstance(outcome, Refusal):
                    return outcome, until
                decision = retry.after_status(
                    tries,
                    outcome.status,
                    outcome.headers,
                    outcome.content,
                    call.deadline - loop.time(),
                )
                if decision.delay_s is None:
                    error = error_for_refusal(outcome, call.model, self._redactor, self._credential)
                    raise with_retry_advice(error, decision)
            await asyncio.sleep(decision.delay_s)

    def _timeout_error(self) -> UpstreamTimeoutError:
        error = UpstreamTimeoutError(
            f"The upstream did not answer within the {self._timeout_s:g} s request deadline."
        )
        return with_retry_advice(error, self._retry.after_timeout())
