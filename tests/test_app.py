"""The app factory: the error table, limits, request ids, logging, docs and CORS."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from tests.conftest import AUTH, CANARY_KEY, CANARY_TOKEN, chat_completion, make_client

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "a secret prompt"}]}


def assert_error_shape(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_type and body["error"]["message"]
    assert len(response.headers.get_list("x-request-id")) == 1
    assert response.headers["x-error-message"] == body["error"]["message"][:300]
    return body["error"]


@pytest.mark.parametrize(
    ("upstream_status", "upstream_body", "status", "error_type", "words"),
    [
        (
            401,
            {"error": "Invalid credentials in Authorization header"},
            502,
            "upstream_error",
            "HF_TOKEN",
        ),
        (403, {"error": "forbidden"}, 502, "upstream_error", "not the caller's fault"),
        (
            402,
            {"error": "You have depleted your monthly included credits"},
            402,
            "insufficient_quota",
            "credits",
        ),
        (404, "Not Found", 404, "not_found_error", "HuggingFaceTB/SmolLM3-3B"),
        (
            400,
            {"error": "Model not supported by provider"},
            400,
            "invalid_request_error",
            "Model not supported",
        ),
        (
            422,
            {"error": "Input validation error", "error_type": "validation"},
            422,
            "invalid_request_error",
            "validation",
        ),
        (424, {"error": "generation failed"}, 502, "upstream_error", "424"),
        (500, {"error": "boom"}, 502, "upstream_error", "500"),
        (503, {"error": "Model is loading", "estimated_time": 20.0}, 502, "upstream_error", "503"),
        (504, "gateway timeout", 504, "timeout_error", "timed out"),
    ],
)
def test_upstream_failures_are_translated(
    client: TestClient,
    upstream: respx.Router,
    upstream_status: int,
    upstream_body: object,
    status: int,
    error_type: str,
    words: str,
) -> None:
    if isinstance(upstream_body, str):
        upstream.post(CHAT).respond(upstream_status, text=upstream_body)
    else:
        upstream.post(CHAT).respond(upstream_status, json=upstream_body)
    error = assert_error_shape(client.post(CHAT, json=HELLO, headers=AUTH), status, error_type)
    assert words in error["message"]
    assert CANARY_TOKEN not in error["message"]


def test_rate_limit_passes_retry_after_on(client: TestClient, upstream: respx.Router) -> None:
    upstream.post(CHAT).respond(429, json={"error": "slow down"}, headers={"Retry-After": "12"})
    response = client.post(CHAT, json=HELLO, headers=AUTH)
    assert_error_shape(response, 429, "rate_limit_error")
    assert response.headers["retry-after"] == "12"


def test_upstream_answer_that_is_not_json_returns_502(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(CHAT).respond(200, text="<html>oops</html>")
    assert_error_shape(client.post(CHAT, json=HELLO, headers=AUTH), 502, "upstream_error")


def test_upstream_answer_of_wrong_shape_returns_502(
    client: TestClient, upstream: respx.Router
) -> None:
    for body in [[1, 2], {"choices": []}, {"choices": "x"}, {"nothing": True}]:
        upstream.post(CHAT).respond(200, json=body)
        error = assert_error_shape(
            client.post(CHAT, json=HELLO, headers=AUTH), 502, "upstream_error"
        )
        assert "not a chat completion" in error["message"]
        generate = client.post("/api/generate", json={"prompt": "x"}, headers=AUTH)
        assert_error_shape(generate, 502, "upstream_error")


def test_upstream_timeout_returns_504(client: TestClient, upstream: respx.Router) -> None:
    upstream.post(CHAT).mock(side_effect=httpx.ReadTimeout("slow"))
    error = assert_error_shape(client.post(CHAT, json=HELLO, headers=AUTH), 504, "timeout_error")
    assert error["code"] == "upstream_timeout"


def test_upstream_error_message_never_carries_the_token(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(CHAT).respond(400, json={"error": f"bad header Bearer {CANARY_TOKEN}"})
    response = client.post(CHAT, json=HELLO, headers=AUTH)
    assert response.status_code == 400
    assert CANARY_TOKEN not in response.text and "[redacted]" in response.text


def test_missing_key_returns_401(client: TestClient, upstream: respx.Router) -> None:
    for path, body in [(CHAT, HELLO), ("/api/generate", {"prompt": "x"})]:
        error = assert_error_shape(client.post(path, json=body), 401, "authentication_error")
        assert "Bearer" in error["message"]
    assert_error_shape(client.get("/v1/models"), 401, "authentication_error")
    assert not upstream.calls


def test_deployment_without_keys_refuses_inference_with_advice(upstream: respx.Router) -> None:
    with make_client(upstream, proxy_api_keys="") as client:
        response = client.post(CHAT, json=HELLO, headers=AUTH)
        error = assert_error_shape(response, 503, "server_error")
        assert "PROXY_API_KEYS" in error["message"]
        assert client.get("/api/health").json()["keys_configured"] is False
    assert not upstream.calls


def test_anonymous_deployment_serves_without_key(upstream: respx.Router) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with make_client(upstream, proxy_api_keys="", allow_anonymous=True) as client:
        assert client.post(CHAT, json=HELLO).status_code == 200


def test_deployment_without_token_refuses_with_advice(upstream: respx.Router) -> None:
    with make_client(upstream, hf_token=None) as client:
        error = assert_error_shape(client.post(CHAT, json=HELLO, headers=AUTH), 503, "server_error")
    assert "HF_TOKEN" in error["message"]
    assert not upstream.calls


def test_unknown_route_and_wrong_method_use_error_shape(client: TestClient) -> None:
    assert_error_shape(client.get("/v2/nothing"), 404, "not_found_error")
    assert_error_shape(client.get(CHAT, headers=AUTH), 405, "invalid_request_error")


def test_body_over_limit_returns_413_before_reading_it(upstream: respx.Router) -> None:
    with make_client(upstream, max_body_bytes=2048) as client:
        big = {"messages": [{"role": "user", "content": "x" * 4096}]}
        error = assert_error_shape(
            client.post(CHAT, json=big, headers=AUTH), 413, "invalid_request_error"
        )
        assert "MAX_BODY_BYTES" in error["message"]

        def chunks():
            for _ in range(10):
                yield b"x" * 1024

        chunked = client.post(
            CHAT, content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
        )
        assert_error_shape(chunked, 413, "invalid_request_error")
    assert not upstream.calls


def test_request_id_is_echoed_when_sane_and_sent_upstream(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    response = client.post(CHAT, json=HELLO, headers={**AUTH, "X-Request-ID": "trace-123.abc"})
    assert response.headers["x-request-id"] == "trace-123.abc"
    assert route.calls.last.request.headers["x-request-id"] == "trace-123.abc"
    response = client.post(
        CHAT, json=HELLO, headers={**AUTH, "X-Request-ID": "bad id\twith spaces"}
    )
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32
    assert route.calls.last.request.headers["x-request-id"] == response.headers["x-request-id"]


def test_one_log_line_per_request_without_prompt_or_secrets(
    client: TestClient, upstream: respx.Router, log_lines: list[str]
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    client.post(CHAT, json=HELLO, headers={**AUTH, "X-Request-ID": "log-test-1"})
    client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer pg_test_canary_bad"})
    assert len(log_lines) == 2
    first, second = (json.loads(line) for line in log_lines)
    assert first == {
        "request_id": "log-test-1",
        "method": "POST",
        "route": CHAT,
        "model": "HuggingFaceTB/SmolLM3-3B",
        "status": 200,
        "upstream_status": 200,
        "attempts": 1,
        "latency_ms": first["latency_ms"],
        "stream": False,
        "client_disconnected": False,
        "caller_stalled": False,
        "key": "key-" + hashlib.sha256(CANARY_KEY.encode()).hexdigest()[:8],
        "user": None,
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "limited_by": None,
        "cache": None,
    }
    assert second["status"] == 401 and second["upstream_status"] is None
    assert second["key"] is None
    text = "\n".join(log_lines)
    for secret in ("a secret prompt", CANARY_TOKEN, CANARY_KEY, "pg_test_canary_bad"):
        assert secret not in text


def test_log_line_records_upstream_status_of_failures(
    client: TestClient, upstream: respx.Router, log_lines: list[str]
) -> None:
    upstream.post(CHAT).respond(402, json={"error": "credits"})
    client.post(CHAT, json=HELLO, headers=AUTH)
    line = json.loads(log_lines[-1])
    assert line["status"] == 402 and line["upstream_status"] == 402


def test_openapi_documents_bearer_scheme_and_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    for path in (CHAT, "/api/generate"):
        operation = spec["paths"][path]["post"]
        assert operation["security"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        ref = body["$ref"].rsplit("/", 1)[-1]
        assert spec["components"]["schemas"][ref]["examples"], path
        assert "401" in operation["responses"] and "502" in operation["responses"]
    assert "/api/health" in spec["paths"] and "/v1/models" in spec["paths"]


def test_docs_page_is_served(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and "swagger" in response.text.lower()


def test_cors_is_off_by_default_and_on_for_configured_origins(upstream: respx.Router) -> None:
    with make_client(upstream) as client:
        response = client.options(
            CHAT, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in response.headers
    with make_client(upstream, cors_origins="https://app.example") as client:
        response = client.options(
            CHAT,
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_unexpected_exception_returns_500_in_error_shape(upstream: respx.Router) -> None:
    upstream.post(CHAT).mock(side_effect=RuntimeError("kaboom"))
    with make_client(upstream) as client:
        response = client.post(CHAT, json=HELLO, headers=AUTH)
    error = assert_error_shape(response, 500, "server_error")
    assert "kaboom" not in error["message"]
