"""OpenTelemetry traces: one span per inference request, in the GenAI semantic conventions.

On only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; the SDK and its
OTLP/HTTP exporter are imported then, never by a cold start without it
(tests/test_import_footprint.py). A span is
built as the response ends (from what the request recorded) and handed to a batch processor
whose thread exports it within `_EXPORT_EVERY_MS`, each export bounded by `_EXPORT_TIMEOUT_S`:
the request never waits for the collector, and an unreachable one costs only dropped spans.
Serverless platforms freeze an idle function, so spans still queued then leave at the next
invocation (or at shutdown, which flushes within the bound).

A span never holds a key, a token or the prompt, unless `OTEL_CAPTURE_CONTENT=true` adds the
request's messages (`gen_ai.input.messages`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from lib import __version__
from lib.settings import Settings

_EXPORT_EVERY_MS = 1000
_EXPORT_TIMEOUT_S = 2.0
_MAX_QUEUED_SPANS = 2048
_MAX_CONTENT_CHARS = 16_000
# gen_ai.operation.name by route; the Hugging Face task routes are text_completion.
_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/api/generate": "text_completion",
    "/v1/responses": "chat",
    "/v1/embeddings": "embeddings",
}


class Tracer:
    """Makes and exports the spans; built by the app factory when tracing is configured."""

    def __init__(self, settings: Settings) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode

        endpoint = settings.traces_endpoint
        assert endpoint is not None
        resource = Resource.create(
            {"service.name": settings.otel_service_name, "service.version": __version__}
        )
        # A provider of our own, not the global one: nothing else in the process is traced.
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, timeout=_EXPORT_TIMEOUT_S),
                max_queue_size=_MAX_QUEUED_SPANS,
                schedule_delay_millis=_EXPORT_EVERY_MS,
                export_timeout_millis=_EXPORT_TIMEOUT_S * 1000,
            )
        )
        self._tracer = self._provider.get_tracer("promptgate", __version__)
        self._capture_content = settings.otel_capture_content
        self._server_kind = SpanKind.SERVER
        self._error_status = Status(StatusCode.ERROR)

    async def record(self, state: dict[str, Any], status: int, latency_s: float) -> None:
        """Emit the span of a finished inference request (others are not traced)."""
        route, access = state.get("usage_route"), state.get("access")
        if route is None or access is None:
            return
        end_ns = time.time_ns()
        call = state.get("upstream_call")
        operation = _OPERATIONS.get(route, "text_completion")  # else a Hugging Face task route
        model = call.model if call is not None else None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": "huggingface",
            "http.route": route,
            "http.response.status_code": status,
            "promptgate.request_id": state.get("request_id", ""),
            "promptgate.key": access.key,
            "promptgate.stream": bool(state.get("stream", False)),
        }
        optional = {
            "gen_ai.request.model": getattr(call, "requested_model", None) or model,
            # The model that answered instead of the one asked for (lib/inference/fallbacks.py).
            "promptgate.fallback": model if getattr(call, "requested_model", None) else None,
            "gen_ai.response.model": getattr(call, "response_model", None) or model,
            "gen_ai.usage.input_tokens": access.prompt_tokens,
            "gen_ai.usage.output_tokens": access.completion_tokens,
            "gen_ai.request.max_tokens": access.max_tokens,
            "promptgate.user": access.user,
            "promptgate.limited_by": access.refused_by,
            "promptgate.upstream_attempts": call.attempts if call is not None else None,
        }
        attributes.update({name: value for name, value in optional.items() if value is not None})
        error = _error_type(status, state)
        if error is not None:
            attributes["error.type"] = error
        if self._capture_content:
            attributes.update(_content(state.get("json_body")))
        span = self._tracer.start_span(
            f"{operation} {model}" if model else operation,
            kind=self._server_kind,
            start_time=end_ns - int(latency_s * 1e9),
            attributes=attributes,
        )
        if error is not None:
            span.set_status(self._error_status)
        span.end(end_time=end_ns)

    async def aclose(self) -> None:
        """Export what is queued (within the export bound) and stop the exporter's thread."""
        self._provider.shutdown()


def _error_type(status: int, state: dict[str, Any]) -> str | None:
    """What went wrong, in the words of `error.type`: the status class, or a hang-up."""
    if state.get("client_disconnected"):
        return "client_disconnected"
    return str(status) if status >= 400 else None


def _content(body: Any) -> dict[str, str]:
    """The request's messages (chat's `messages`, the Responses API's `instructions` and
    `input`, an embedding's or a task's `input`/`inputs`), as JSON, cut at a bound."""
    if not isinstance(body, dict):
        return {}
    held = {
        name: body[name] for name in ("messages", "instructions", "input", "inputs") if name in body
    }
    if not held:
        return {}
    text = json.dumps(held, ensure_ascii=False)[:_MAX_CONTENT_CHARS]
    return {"gen_ai.input.messages": text}
