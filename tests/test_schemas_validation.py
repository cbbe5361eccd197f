"""A refused field is named as sent (`input`, not `input.str`) with the rule it actually broke;
what passes is forwarded as the caller wrote it."""

from __future__ import annotations

import json

import pytest
import respx
from fastapi.testclient import TestClient

from lib.schemas import explain_validation_error
from tests.conftest import AUTH, chat_completion

HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("path", "body", "param", "reason"),
    [
        ("/v1/embeddings", {"input": ["x"] * 2049}, "input", "at most 2048 items, not 2049"),
        ("/v1/embeddings", {"input": []}, "input", "at least 1 item"),
        ("/v1/embeddings", {"input": 5}, "input", "expected a string or a list of strings"),
        ("/v1/embeddings", {"input": {"a": 1}}, "input", "expected a string or a list of strings"),
        ("/v1/embeddings", {"input": ["a", 5]}, "input.1", "should be a valid string"),
        ("/v1/embeddings", {"input": "x" * 32_769}, "input", "at most 32768 characters"),
        ("/v1/embeddings", {"input": ["a", "x" * 32_769]}, "input.1", "at most 32768 characters"),
        ("/v1/embeddings", {}, "input", "Field required"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": 5}]},
            "messages.0.content",
            "expected a string or a list of objects",
        ),
        (
            "/v1/chat/completions",
            {"messages": HELLO, "stop": 5},
            "stop",
            "expected a string or a list of strings",
        ),
        ("/v1/chat/completions", {"messages": HELLO, "stop": ["a"] * 5}, "stop", "at most 4 stop"),
        ("/v1/chat/completions", {"messages": HELLO, "stop": ["a", 3]}, "stop.1", "valid string"),
        ("/v1/chat/completions", {"messages": HELLO, "temperature": 3}, "temperature", "or equal"),
        ("/v1/chat/completions", {"messages": HELLO, "top_p": "1"}, "top_p", "a valid number"),
        ("/api/generate", {"prompt": "x", "temperature": True}, "temperature", "a valid number"),
    ],
)
def test_refusal_names_the_field_and_the_rule_it_broke(
    client: TestClient, path: str, body: dict, param: str, reason: str
) -> None:
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].startswith(f"Invalid value for '{param}': ")
    assert reason in error["message"]
    assert "str]" not in error["message"] and "Value error" not in error["message"]


@pytest.mark.parametrize("token_ids", [[1, 2, 3], [[1, 2, 3], [4, 5]]])
def test_token_id_arrays_are_refused_with_what_to_do_instead(
    client: TestClient, upstream: respx.Router, token_ids: list
) -> None:
    response = client.post("/v1/embeddings", json={"input": token_ids}, headers=AUTH)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "input"
    assert "token-id arrays are not supported" in error["message"]
    assert "check_embedding_ctx_length=False" in error["message"]
    assert not upstream.calls


def test_errors_outside_a_union_are_reported_as_pydantic_states_them() -> None:
    errors = [{"type": "missing", "loc": ("body", "messages"), "msg": "Field required"}]
    assert explain_validation_error(errors, {}) == ("messages", "Field required")
    path_error = [{"type": "string_type", "loc": ("path", "model"), "msg": "bad"}]
    assert explain_validation_error(path_error, None) == ("model", "bad")
    assert explain_validation_error([], None) == (None, "invalid request")


def test_whole_numbers_reach_the_upstream_as_sent(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post("/v1/chat/completions").respond(200, json=chat_completion())
    body = {
        "messages": HELLO,
        "temperature": 0,
        "top_p": 1,
        "seed": 7,
        "max_tokens": 16,
        "frequency_penalty": 0,
        "presence_penalty": 1,
        "n": 1,
        "top_logprobs": 2,
        "logprobs": True,
    }
    assert client.post("/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    sent = route.calls.last.request.content.decode()
    for name in ("temperature", "top_p", "seed", "max_tokens", "frequency_penalty", "n"):
        assert f'"{name}":{body[name]},' in sent or f'"{name}":{body[name]}}}' in sent, name
    assert ".0" not in sent
    fractional = {"messages": HELLO, "temperature": 0.7, "top_p": 0.25}
    assert client.post("/v1/chat/completions", json=fractional, headers=AUTH).status_code == 200
    assert json.loads(route.calls.last.request.content)["temperature"] == 0.7


def test_generate_forwards_a_whole_temperature_as_sent(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post("/v1/chat/completions").respond(200, json=chat_completion())
    body = {"prompt": "x", "temperature": 1, "max_tokens": 5}
    assert client.post("/api/generate", json=body, headers=AUTH).status_code == 200
    sent = route.calls.last.request.content.decode()
    assert '"temperature":1' in sent and '"max_tokens":5' in sent and ".0" not in sent


def test_legacy_function_message_is_forwarded(client: TestClient, upstream: respx.Router) -> None:
    route = upstream.post("/v1/chat/completions").respond(200, json=chat_completion())
    messages = [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": None, "function_call": {"name": "w", "arguments": "{}"}},
        {"role": "function", "name": "w", "content": '{"sky": "blue"}'},
    ]
    response = client.post("/v1/chat/completions", json={"messages": messages}, headers=AUTH)
    assert response.status_code == 200
    assert json.loads(route.calls.last.request.content)["messages"] == messages
