"""The routes, through the app with a faked upstream: what callers get, what the router receives."""

from __future__ import annotations

import json

import httpx
import respx
from fastapi.testclient import TestClient

from tests.conftest import (
    AUTH,
    CANARY_KEY,
    CANARY_TOKEN,
    chat_completion,
    chunk,
    make_client,
    sse,
)

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}


def test_chat_forwards_with_server_token_and_returns_upstream_answer(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion("Hi there!"))
    response = client.post(
        CHAT,
        json={**HELLO, "max_tokens": 20, "temperature": 0.5, "logit_bias": {"1": 2}},
        headers={**AUTH, "Cookie": "session=abc", "X-Custom": "private"},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hi there!"
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert "cookie" not in sent.headers and "x-custom" not in sent.headers
    assert CANARY_KEY not in str(sent.headers) and CANARY_KEY.encode() not in sent.content
    body = json.loads(sent.content)
    assert body == {
        **HELLO,
        "model": "HuggingFaceTB/SmolLM3-3B",
        "max_tokens": 20,
        "temperature": 0.5,
        "logit_bias": {"1": 2},
    }


def test_chat_without_model_uses_default_model(client: TestClient, upstream: respx.Router) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
    assert json.loads(route.calls.last.request.content)["model"] == "HuggingFaceTB/SmolLM3-3B"


def test_chat_with_placeholder_model_dummy_uses_default_model(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    assert client.post(CHAT, json={**HELLO, "model": "dummy"}, headers=AUTH).status_code == 200
    assert json.loads(route.calls.last.request.content)["model"] == "HuggingFaceTB/SmolLM3-3B"


def test_chat_with_model_off_the_allowlist_returns_403(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    response = client.post(CHAT, json={**HELLO, "model": "meta-llama/Llama-3.1-405B"}, headers=AUTH)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "permission_error" and error["param"] == "model"
    assert "HuggingFaceTB/SmolLM3-3B" in error["message"]
    assert not route.called


def test_chat_with_allowed_model_and_provider_suffix_is_forwarded(upstream: respx.Router) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    with make_client(upstream, allowed_models="Qwen/Qwen2.5-7B-Instruct") as client:
        model = "Qwen/Qwen2.5-7B-Instruct:groq"
        assert client.post(CHAT, json={**HELLO, "model": model}, headers=AUTH).status_code == 200
    assert json.loads(route.calls.last.request.content)["model"] == model


def test_chat_with_malformed_model_id_returns_422_naming_model(
    client: TestClient, upstream: respx.Router
) -> None:
    for model in ["../../etc/passwd", "a/b/c", "org--x/y", "https://evil.test/x", "x" * 300]:
        response = client.post(CHAT, json={**HELLO, "model": model}, headers=AUTH)
        assert response.status_code == 422, model
        assert response.json()["error"]["param"] == "model"
    assert not upstream.calls


def test_chat_with_bad_fields_returns_422_naming_the_field(client: TestClient) -> None:
    cases = {
        "messages": {"messages": []},
        "temperature": {**HELLO, "temperature": 9},
        "max_tokens": {**HELLO, "max_tokens": 0},
        "messages.0.role": {"messages": [{"role": "wizard", "content": "x"}]},
        "stop": {**HELLO, "stop": ["a", "b", "c", "d", "e"]},
    }
    for field, body in cases.items():
        response = client.post(CHAT, json=body, headers=AUTH)
        assert response.status_code == 422, field
        error = response.json()["error"]
        assert error["param"] == field and field in error["message"]
        assert error["type"] == "invalid_request_error"


def test_chat_with_body_that_is_not_json_returns_422(client: TestClient) -> None:
    response = client.post(
        CHAT, content=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["error"]["message"]
    response = client.post(
        CHAT, content=json.dumps(HELLO), headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]["message"]


def test_chat_stream_relays_events_with_unbuffered_headers(
    client: TestClient, upstream: respx.Router
) -> None:
    body = sse(
        chunk("Hel"),
        chunk("lo"),
        chunk(finish_reason="stop"),
        chunk(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        "[DONE]",
    )
    route = upstream.post(CHAT).respond(
        200, content=body, headers={"Content-Type": "text/event-stream"}
    )
    request = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    response = client.post(CHAT, json=request, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.content == body
    sent = json.loads(route.calls.last.request.content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_chat_stream_cut_short_ends_with_error_event_and_no_done(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(CHAT).respond(
        200, content=sse(chunk("Hel")), headers={"Content-Type": "text/event-stream"}
    )
    response = client.post(CHAT, json={**HELLO, "stream": True}, headers=AUTH)
    events = [e for e in response.text.split("\n\n") if e]
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["content"] == "Hel"
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["type"] == "upstream_error"
    assert "[DONE]" not in response.text


def test_chat_stream_with_upstream_error_event_ends_with_error_event(
    client: TestClient, upstream: respx.Router
) -> None:
    body = sse(
        chunk("Hel"),
        {"error": {"message": "CUDA out of memory", "http_status_code": 500}},
        "[DONE]",
    )
    upstream.post(CHAT).respond(200, content=body, headers={"Content-Type": "text/event-stream"})
    response = client.post(CHAT, json={**HELLO, "stream": True}, headers=AUTH)
    events = [e for e in response.text.split("\n\n") if e]
    last = json.loads(events[-1].removeprefix("data: "))
    assert "CUDA out of memory" in last["error"]["message"]
    assert "[DONE]" not in response.text


def test_chat_stream_upstream_failure_before_first_byte_returns_status(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(CHAT).respond(429, json={"error": "busy"}, headers={"Retry-After": "3"})
    response = client.post(CHAT, json={**HELLO, "stream": True}, headers=AUTH)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_generate_returns_text_finish_reason_and_usage(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion("A haiku."))
    response = client.post(
        "/api/generate",
        json={
            "prompt": "Write a haiku",
            "system": "Be brief.",
            "max_tokens": 30,
            "temperature": 0.2,
        },
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.json() == {
        "model": "HuggingFaceTB/SmolLM3-3B",
        "text": "A haiku.",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    sent = json.loads(route.calls.last.request.content)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a haiku"},
    ]
    assert sent["max_tokens"] == 30 and sent["temperature"] == 0.2 and sent["stream"] is False


def test_generate_stream_sends_text_deltas_then_usage_then_done(
    client: TestClient, upstream: respx.Router
) -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    body = sse(chunk("Hel"), chunk("lo"), chunk(finish_reason="stop"), chunk(usage=usage), "[DONE]")
    route = upstream.post(CHAT).respond(
        200, content=body, headers={"Content-Type": "text/event-stream"}
    )
    response = client.post("/api/generate", json={"prompt": "hi", "stream": True}, headers=AUTH)
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    assert [json.loads(e) for e in events[:2]] == [{"text": "Hel"}, {"text": "lo"}]
    assert json.loads(events[2]) == {
        "model": "HuggingFaceTB/SmolLM3-3B",
        "text": "",
        "finish_reason": "stop",
        "usage": usage,
    }
    assert events[3] == "[DONE]"
    assert json.loads(route.calls.last.request.content)["stream_options"] == {"include_usage": True}


def test_generate_rejects_unknown_fields_and_empty_prompt(client: TestClient) -> None:
    response = client.post("/api/generate", json={"prompt": ""}, headers=AUTH)
    assert response.status_code == 422 and response.json()["error"]["param"] == "prompt"
    response = client.post("/api/generate", json={"prompt": "x", "tempature": 1}, headers=AUTH)
    assert response.status_code == 422 and response.json()["error"]["param"] == "tempature"


def test_models_lists_allowed_models_in_openai_shape(upstream: respx.Router) -> None:
    with make_client(
        upstream, allowed_models="HuggingFaceTB/SmolLM3-3B,Qwen/Qwen2.5-7B-Instruct"
    ) as client:
        response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [
        "HuggingFaceTB/SmolLM3-3B",
        "Qwen/Qwen2.5-7B-Instruct",
    ]
    assert body["data"][1] == {
        "id": "Qwen/Qwen2.5-7B-Instruct",
        "object": "model",
        "created": 0,
        "owned_by": "Qwen",
        "task": None,
    }
    assert body["data"][0]["task"] == "chat-completion"


def test_health_needs_no_key_calls_nothing_and_reports_booleans(
    client: TestClient, upstream: respx.Router
) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": "0.1.0",
        "token_configured": True,
        "keys_configured": True,
        "anonymous_allowed": False,
        "limits_store": "memory",
        "limits_store_reachable": True,
    }
    assert CANARY_TOKEN not in response.text and CANARY_KEY not in response.text
    assert not upstream.calls


def test_upstream_connect_error_returns_502(client: TestClient, upstream: respx.Router) -> None:
    upstream.post(CHAT).mock(side_effect=httpx.ConnectError("boom"))
    response = client.post(CHAT, json=HELLO, headers=AUTH)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "Could not connect to the upstream."
