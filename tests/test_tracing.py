"""OpenTelemetry traces: the spans a real OTLP/HTTP receiver on loopback gets from the app, and
what an unreachable or frozen collector costs a request (nothing beyond the export bound)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from lib.settings import SettingsError, load_settings
from tests.conftest import AUTH, CANARY_KEY, CANARY_TOKEN, chat_completion, make_settings
from tests.otlp_receiver import Receiver, create_receiver_app
from tests.secret_audit import audited
from tests.servers import serve_on_loopback

CHAT = "/v1/chat/completions"
PROMPT = "pg_test_canary_prompt_text: tell me a secret"
HELLO = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
TOKEN_SECRET = "pg_test_canary_token_secret_tracing_0123456789"
SPAN_SERVER = 2  # SpanKind.SERVER in OTLP


def _policy(rpm: int = 1000) -> str:
    digest = hashlib.sha256(CANARY_KEY.encode()).hexdigest()
    return f'[keys.app]\nsha256 = "{digest}"\nrpm = {rpm}\n'


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    received = Receiver()
    with serve_on_loopback(create_receiver_app(received)) as url:
        yield received, url


def traced_client(upstream: respx.Router, endpoint: str, **settings: Any) -> TestClient:
    values = {
        "keys_toml": _policy(),
        "otel_exporter_otlp_endpoint": endpoint,
        "token_secret": TOKEN_SECRET,
        **settings,
    }
    app = create_app(make_settings(**values), transport=httpx.MockTransport(upstream.async_handler))
    return TestClient(audited(app), raise_server_exceptions=False)


def test_a_chat_request_becomes_one_genai_span(
    upstream: respx.Router, receiver: tuple[Receiver, str]
) -> None:
    received, url = receiver
    upstream.post(CHAT).respond(200, json=chat_completion(model="HuggingFaceTB/SmolLM3-3B"))
    with traced_client(upstream, url) as client:
        minted = client.post("/v1/tokens", json={"user": "alice"}, headers=AUTH).json()["token"]
        token = {"Authorization": f"Bearer {minted}"}
        response = client.post(CHAT, json=HELLO, headers=token)
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
    # Leaving the client shut the app down, which exported what was queued.
    assert len(received.spans) == 1  # minting a token is not an inference request
    span = received.spans[0]
    assert span.name == "chat HuggingFaceTB/SmolLM3-3B"
    assert span.kind == SPAN_SERVER
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "huggingface",
        "gen_ai.request.model": "HuggingFaceTB/SmolLM3-3B",
        "gen_ai.response.model": "HuggingFaceTB/SmolLM3-3B",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.request.max_tokens": 64,
        "http.route": CHAT,
        "http.response.status_code": 200,
        "promptgate.request_id": request_id,
        "promptgate.key": "app",
        "promptgate.user": "alice",
        "promptgate.stream": False,
        "promptgate.upstream_attempts": 1,
    }
    assert span.resource["service.name"] == "promptgate"
    assert 0 < span.end_ns - span.start_ns < 10 * 10**9
    exported = b"".join(received.bodies)
    for secret in (CANARY_KEY, CANARY_TOKEN, minted, PROMPT, TOKEN_SECRET):
        assert secret.encode() not in exported


def test_a_fallback_s_span_names_the_model_asked_for_and_the_one_that_answered(
    upstream: respx.Router, receiver: tuple[Receiver, str]
) -> None:
    received, url = receiver
    asked, answered = "org/model-a", "org/model-b"

    def answer(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model == asked:
            return httpx.Response(503, json={"error": "Model is currently loading"})
        return httpx.Response(200, json=chat_completion(model=model))

    upstream.post(CHAT).mock(side_effect=answer)
    settings = {"allowed_models": f"{asked},{answered}", "fallbacks": {asked: [answered]}}
    with traced_client(upstream, url, **settings) as client:
        response = client.post(CHAT, json={**HELLO, "model": asked}, headers=AUTH)
        assert response.headers["x-promptgate-fallback"] == answered
    attributes = received.spans[0].attributes
    assert attributes["gen_ai.request.model"] == asked
    assert attributes["gen_ai.response.model"] == answered
    assert attributes["promptgate.fallback"] == answered
    assert attributes["promptgate.upstream_attempts"] == 2


def test_content_is_captured_only_when_asked(
    upstream: respx.Router, receiver: tuple[Receiver, str]
) -> None:
    received, url = receiver
    upstream.post(CHAT).respond(200, json=chat_completion())
    with traced_client(upstream, url, otel_capture_content=True) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
    messages = received.spans[0].attributes["gen_ai.input.messages"]
    assert PROMPT in messages
    assert CANARY_KEY.encode() not in b"".join(received.bodies)


def test_refusals_and_upstream_failures_carry_an_error_type(
    upstream: respx.Router, receiver: tuple[Receiver, str]
) -> None:
    received, url = receiver
    route = upstream.post(CHAT)
    route.respond(503, json={"error": "overloaded"})
    with traced_client(upstream, url, keys_toml=_policy(rpm=1)) as client:
        failed = client.post(CHAT, json=HELLO, headers=AUTH)
        limited = client.post(CHAT, json=HELLO, headers=AUTH)
    assert limited.status_code == 429
    by_status = {s.attributes["http.response.status_code"]: s for s in received.spans}
    assert set(by_status) == {failed.status_code, 429}
    assert by_status[429].attributes["error.type"] == "429"
    assert by_status[429].attributes["promptgate.limited_by"] == "rpm"
    assert by_status[failed.status_code].attributes["error.type"] == str(failed.status_code)
    assert all(s.status_code == 2 for s in received.spans)  # STATUS_CODE_ERROR


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _timed_requests(client: TestClient, count: int) -> float:
    started = time.monotonic()
    for _ in range(count):
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
    return time.monotonic() - started


def test_an_unreachable_collector_neither_slows_nor_fails_a_request(
    upstream: respx.Router, receiver: tuple[Receiver, str]
) -> None:
    received, url = receiver
    upstream.post(CHAT).respond(200, json=chat_completion())
    with traced_client(upstream, url) as client:
        reachable = _timed_requests(client, 20)
    unreachable_url = f"http://127.0.0.1:{_closed_port()}"
    with traced_client(upstream, unreachable_url) as client:
        unreachable = _timed_requests(client, 20)
        started = time.monotonic()
    shutdown = time.monotonic() - started
    assert len(received.spans) == 20
    # Not a timing of the request path (a shared machine is noisy), but a refused collector
    # must not add anything like a connection attempt per request.
    assert unreachable < reachable + 2.0
    assert shutdown < 5.0


def test_a_frozen_collector_costs_shutdown_no_more_than_the_export_bound(
    upstream: respx.Router, receiver: tuple[Receiver, str]
) -> None:
    received, url = receiver
    received.hang = True
    upstream.post(CHAT).respond(200, json=chat_completion())
    client = traced_client(upstream, url)
    with client:
        elapsed = _timed_requests(client, 10)
        time.sleep(1.2)  # the batch's timer fires: its export now hangs on the collector
        closing = time.monotonic()
    shutdown = time.monotonic() - closing
    assert elapsed < 5.0
    assert shutdown < 6.0  # the export bound (2 s), twice at most, and no more
    assert received.spans == []


def test_the_endpoint_follows_the_standard_variables() -> None:
    assert make_settings().traces_endpoint is None
    base = make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318/")
    assert base.traces_endpoint == "http://127.0.0.1:4318/v1/traces"
    exact = make_settings(
        otel_exporter_otlp_endpoint="http://ignored:4318",
        otel_exporter_otlp_traces_endpoint="https://collector.example/custom/path",
    )
    assert exact.traces_endpoint == "https://collector.example/custom/path"
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        load_settings(_env_file=None, otel_exporter_otlp_endpoint="grpc://127.0.0.1:4317")
