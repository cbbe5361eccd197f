"""lib.routes.direct_call: which endpoints skip FastAPI's dependency solving, and that those
answer as FastAPI's handler would (validation errors included)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lib.app import create_app
from lib.routes.direct_call import direct_call
from lib.routes.gate import GatedRoute, require_caller
from lib.settings import Settings

KEY = "pg_test_canary_direct_call_key"
TOKEN = "hf_test_canary_direct_call_token"


def _gated_routes(app: FastAPI) -> dict[str, GatedRoute]:
    """The app's gated routes by path, as its router serves them."""
    routes = {}
    for route in app.router.routes:
        original = getattr(route, "original_router", None)
        for inner in original.routes if original is not None else [route]:
            if isinstance(inner, GatedRoute):
                routes[inner.path] = inner
    return routes


_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _app(upstream: list[httpx.Request]) -> FastAPI:
    def answer(request: httpx.Request) -> httpx.Response:
        upstream.append(request)
        return httpx.Response(200, json=_COMPLETION)

    settings = Settings(_env_file=None, hf_token=TOKEN, proxy_api_keys=KEY)
    return create_app(settings, transport=httpx.MockTransport(answer))


def test_hot_routes_are_called_directly_and_the_rest_through_fastapi() -> None:
    routes = _gated_routes(_app([]))
    direct = {path for path, route in routes.items() if direct_call(route, require_caller)}
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/responses"} <= direct
    # An answer FastAPI serializes (a response model), and path parameters, keep its handler.
    assert "/api/generate" not in direct
    assert not any(path.startswith("/models/") for path in direct)


@pytest.mark.parametrize(
    ("body", "param", "reason"),
    [
        ({"messages": "hello"}, "messages", "Input should be a valid list"),
        ({}, "messages", "Field required"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "maybe"}, "stream", "bool"),
    ],
)
def test_directly_called_route_refuses_a_bad_body_in_the_error_shape(
    body: dict, param: str, reason: str
) -> None:
    upstream: list[httpx.Request] = []
    with TestClient(_app(upstream)) as client:
        chat = client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert chat.status_code == 422
    error = chat.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_value"
    assert reason in error["message"]
    assert chat.headers["x-request-id"]
    assert upstream == []


def test_directly_called_route_forwards_the_validated_body() -> None:
    upstream: list[httpx.Request] = []
    with TestClient(_app(upstream)) as client:
        chat = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "hello"
    (sent,) = upstream
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert b'"max_tokens":5' in sent.content
    assert b'"content":"hi"' in sent.content
