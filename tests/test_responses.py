"""`/v1/responses`: what reaches the upstream, what the caller gets, how a stream ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.inference import ResponseUsage, response_usage, stream_response
from lib.upstream import UpstreamCall, UpstreamClient
from tests.conftest import AUTH, CANARY_TOKEN, make_client, make_settings

MODEL = "HuggingFaceTB/SmolLM3-3B"
USAGE = {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}


def response_object(text: str = "Hi there", status: str = "completed", **extra: Any) -> dict:
    """A response as the router answers one."""
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": MODEL,
        "status": status,
        "output": [message],
        "usage": USAGE,
        **extra,
    }


def named(kind: str, sequence: int, *, with_event_line: bool = True, **fields: Any) -> str:
    """One Responses event block, with or without its `event:` line."""
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return (f"event: {kind}\n" if with_event_line else "") + f"data: {data}\n\n"


def full_stream(*, with_event_lines: bool = True, terminal: str = "response.completed") -> str:
    kinds = [
        ("response.created", {"response": {**response_object(), "status": "in_progress"}}),
        ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "delta": "Hi"}),
        ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "delta": " there"}),
        (terminal, {"response": response_object()}),
    ]
    return "".join(
        named(kind, i, with_event_line=with_event_lines, **fields)
        for i, (kind, fields) in enumerate(kinds)
    )


def blocks_of(text: str) -> list[str]:
    return [block for block in text.split("\n\n") if block]


def data_of(block: str) -> dict:
    return json.loads(block.split("data: ", 1)[1])


@pytest.fixture
def responses_route(upstream: respx.Router) -> respx.Route:
    return upstream.post("/v1/responses")


def test_response_is_forwarded_with_store_false_and_answered_as_sent(
    client: TestClient, responses_route: respx.Route
) -> None:
    responses_route.respond(json=response_object())
    body = {"model": MODEL, "input": "Hello", "max_output_tokens": 50, "text": {"verbosity": "low"}}
    response = client.post("/v1/responses", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == response_object()
    sent = responses_route.calls.last.request
    assert json.loads(sent.content) == {**body, "store": False}
    assert sent.headers["authorization"] == f"Bearer {CANARY_TOKEN}"


def test_numbers_are_forwarded_as_sent(client: TestClient, responses_route: respx.Route) -> None:
    responses_route.respond(json=response_object())
    body = {"input": "x", "temperature": 0, "top_p": 1, "max_output_tokens": 64}
    client.post("/v1/responses", json=body, headers=AUTH)
    sent = responses_route.calls.last.request.content
    assert b'"temperature":0,' in sent and b'"top_p":1,' in sent


def test_model_defaults_to_the_deployments_chat_model(
    client: TestClient, responses_route: respx.Route
) -> None:
    responses_route.respond(json=response_object())
    client.post("/v1/responses", json={"input": [{"role": "user", "content": "x"}]}, headers=AUTH)
    assert json.loads(responses_route.calls.last.request.content)["model"] == MODEL


def test_store_false_is_accepted(client: TestClient, responses_route: respx.Route) -> None:
    responses_route.respond(json=response_object())
    response = client.post("/v1/responses", json={"input": "x", "store": False}, headers=AUTH)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("store", True, "store_not_supported"),
        ("previous_response_id", "resp_123", "not_stored"),
        ("conversation", "conv_1", "not_stored"),
        ("background", True, "not_stored"),
    ],
)
def test_what_needs_a_stored_response_is_refused_before_the_upstream(
    client: TestClient, responses_route: respx.Route, field: str, value: Any, code: str
) -> None:
    response = client.post("/v1/responses", json={"input": "x", field: value}, headers=AUTH)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == field
    assert "keeps no responses" in error["message"]
    assert not responses_route.called


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": 42}, "input"),
        ({"input": ["not an item"]}, "input"),
        ({"input": "x", "stream": "yes"}, "stream"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "max_output_tokens": "64"}, "max_output_tokens"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "model": "bad..model"}, "model"),
        ({"input": "x", "store": "false"}, "store"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: TestClient, responses_route: respx.Route, body: dict, param: str
) -> None:
    response = client.post("/v1/responses", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param
    assert not responses_route.called


def test_input_error_states_the_rule(client: TestClient) -> None:
    response = client.post("/v1/responses", json={"input": 42}, headers=AUTH)
    assert "a text, or a non-empty list of input items" in response.json()["error"]["message"]


def test_model_outside_the_allowlist_is_403_and_not_sent(
    client: TestClient, responses_route: respx.Route
) -> None:
    response = client.post(
        "/v1/responses", json={"model": "meta-llama/Llama-3.1-405B", "input": "x"}, headers=AUTH
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "model_not_allowed"
    assert not responses_route.called


def test_missing_client_key_is_401_and_not_sent(
    client: TestClient, responses_route: respx.Route
) -> None:
    response = client.post("/v1/responses", json={"input": "x"})
    assert response.status_code == 401
    assert not responses_route.called


def test_upstream_rate_limit_is_429_with_retry_after(
    client: TestClient, responses_route: respx.Route
) -> None:
    responses_route.respond(429, json={"error": "Too many requests"}, headers={"Retry-After": "7"})
    response = client.post("/v1/responses", json={"input": "x"}, headers=AUTH)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_failures_before_the_first_byte_are_retried(upstream: respx.Router) -> None:
    route = upstream.post("/v1/responses")
    route.side_effect = [httpx.Response(502), httpx.Response(200, json=response_object())]
    with make_client(upstream, upstream_max_attempts=2) as client:
        response = client.post("/v1/responses", json={"input": "x"}, headers=AUTH)
    assert response.status_code == 200 and route.call_count == 2


def test_a_failed_response_is_not_answered_with_200(
    client: TestClient, responses_route: respx.Route
) -> None:
    failed = response_object(status="failed", error={"code": "server_error", "message": "boom"})
    responses_route.respond(json=failed)
    response = client.post("/v1/responses", json={"input": "x"}, headers=AUTH)
    assert response.status_code == 502
    assert response.json()["error"]["message"].endswith("boom")


def test_an_incomplete_response_is_answered(
    client: TestClient, responses_route: respx.Route
) -> None:
    incomplete = response_object(status="incomplete")
    responses_route.respond(json=incomplete)
    response = client.post("/v1/responses", json={"input": "x"}, headers=AUTH)
    assert response.status_code == 200 and response.json()["status"] == "incomplete"


def test_an_answer_that_is_no_response_is_502(
    client: TestClient, responses_route: respx.Route
) -> None:
    responses_route.respond(json={"choices": []})
    response = client.post("/v1/responses", json={"input": "x"}, headers=AUTH)
    assert response.status_code == 502
    assert "not a response" in response.json()["error"]["message"]


@pytest.mark.parametrize("with_event_lines", [True, False])
@pytest.mark.parametrize("terminal", ["response.completed", "response.incomplete"])
def test_stream_is_relayed_event_for_event_and_complete(
    client: TestClient, responses_route: respx.Route, with_event_lines: bool, terminal: str
) -> None:
    upstream_text = full_stream(with_event_lines=with_event_lines, terminal=terminal)
    responses_route.respond(text=upstream_text, headers={"content-type": "text/event-stream"})
    response = client.post("/v1/responses", json={"input": "x", "stream": True}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == upstream_text  # `event:` lines kept; no error, no `[DONE]` added
    assert json.loads(responses_route.calls.last.request.content)["stream"] is True


def test_a_failed_response_ends_its_stream_as_sent(
    client: TestClient, responses_route: respx.Route
) -> None:
    upstream_text = full_stream(terminal="response.failed")
    responses_route.respond(text=upstream_text, headers={"content-type": "text/event-stream"})
    response = client.post("/v1/responses", json={"input": "x", "stream": True}, headers=AUTH)
    assert response.text == upstream_text


def test_nothing_after_the_terminal_event_is_relayed(
    client: TestClient, responses_route: respx.Route
) -> None:
    upstream_text = full_stream() + "data: [DONE]\n\n" + named("response.output_text.delta", 9)
    responses_route.respond(text=upstream_text, headers={"content-type": "text/event-stream"})
    response = client.post("/v1/responses", json={"input": "x", "stream": True}, headers=AUTH)
    assert response.text == full_stream()


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("", "The upstream stream ended before it was complete."),
        ("data: [DONE]\n\n", "The upstream stream ended before it was complete."),
        ("event: response.output_text.delta\ndata: {not json\n\n", "not JSON"),
        (named("error", 3, code="server_error", message="CUDA out of memory"), "CUDA out of"),
        (named("error", 3, error={"type": "server_error", "message": "nested"}), "nested"),
    ],
)
def test_a_broken_stream_ends_with_the_responses_error_event(
    client: TestClient, responses_route: respx.Route, tail: str, message: str
) -> None:
    upstream_text = "".join(blocks_of(full_stream())[i] + "\n\n" for i in range(3)) + tail
    responses_route.respond(text=upstream_text, headers={"content-type": "text/event-stream"})
    response = client.post("/v1/responses", json={"input": "x", "stream": True}, headers=AUTH)
    blocks = blocks_of(response.text)
    assert blocks[:3] == blocks_of(full_stream())[:3]
    last = blocks[-1]
    assert last.startswith("event: error\ndata: ")
    error = data_of(last)
    assert error["type"] == "error" and error["sequence_number"] == 3
    assert message in error["message"] and error["param"] is None
    assert error["code"] == "upstream_error"
    # The same error nested, as OpenAI's API also sends it (the openai SDK raises on that).
    assert error["error"] == {
        "message": error["message"],
        "type": "upstream_error",
        "param": None,
        "code": "upstream_error",
    }
    assert not any("response.completed" in block for block in blocks)


def test_stream_charges_the_terminal_responses_usage_to_the_caller(
    upstream: respx.Router,
) -> None:
    upstream.post("/v1/responses").respond(
        text=full_stream(), headers={"content-type": "text/event-stream"}
    )
    charged: list[Any] = []

    class Meter:
        async def charge(self, usage: Any, *, payload: Any = None, answer_chars: int = 0) -> None:
            charged.append((usage, answer_chars))

    async def run() -> bytes:
        client = UpstreamClient(make_settings(), httpx.MockTransport(upstream.async_handler))
        call = UpstreamCall(request_id="r1", model=MODEL)
        payload = {"model": MODEL, "input": "x", "stream": True}
        relay = await stream_response(client, payload, call, Meter())  # type: ignore[arg-type]
        relayed = b"".join([piece async for piece in relay.body_iterator])
        await client.aclose()
        return relayed

    assert asyncio.run(run()).decode() == full_stream()
    usage, _ = charged[0]
    assert response_usage({"usage": usage}) == ResponseUsage(4, 2, 6)


@pytest.mark.parametrize(
    ("response", "usage"),
    [
        (response_object(), ResponseUsage(4, 2, 6)),
        ({"usage": None}, None),
        ({"usage": {"input_tokens": 1}}, None),
        ({"usage": {"input_tokens": True, "output_tokens": 1, "total_tokens": 2}}, None),
        ("not a response", None),
    ],
)
def test_response_usage_reads_only_whole_counts(response: Any, usage: ResponseUsage | None) -> None:
    assert response_usage(response) == usage


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_123"),
        ("DELETE", "/v1/responses/resp_123"),
        ("POST", "/v1/responses/resp_123/cancel"),
        ("GET", "/v1/responses/resp_123/input_items"),
    ],
)
def test_stored_response_routes_say_nothing_is_kept(
    client: TestClient, responses_route: respx.Route, method: str, path: str
) -> None:
    response = client.request(method, path, headers=AUTH)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_stored" and error["type"] == "not_found_error"
    assert "resp_123" in error["message"] and "keeps no responses" in error["message"]
    assert client.request(method, path).status_code == 401
    assert not responses_route.called


def test_openapi_documents_the_responses_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    create = paths["/v1/responses"]["post"]
    assert "text/event-stream" in create["responses"]["200"]["content"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ResponsesRequest"
    )
    assert "404" in paths["/v1/responses/{response_id}"]["get"]["responses"]


def test_the_servers_token_never_reaches_the_caller_from_an_upstream_error_event(
    client: TestClient, responses_route: respx.Route
) -> None:
    leak = f"bad auth {CANARY_TOKEN} for {'x' * 400}"
    upstream_text = named("response.created", 0, response={}) + named("error", 1, message=leak)
    responses_route.respond(text=upstream_text, headers={"content-type": "text/event-stream"})
    response = client.post("/v1/responses", json={"input": "x", "stream": True}, headers=AUTH)
    error = data_of(blocks_of(response.text)[-1])
    assert CANARY_TOKEN not in response.text and CANARY_TOKEN[:12] not in response.text
    assert error["message"].startswith("The upstream failed mid-stream: bad auth [redacted]")
    assert len(error["message"]) < 400


def test_the_servers_token_never_reaches_the_caller_from_a_failed_response(
    client: TestClient, responses_route: respx.Route
) -> None:
    failed = response_object(status="failed", error={"message": f"token {CANARY_TOKEN} refused"})
    responses_route.respond(json=failed)
    response = client.post("/v1/responses", json={"input": "x"}, headers=AUTH)
    assert response.status_code == 502
    assert CANARY_TOKEN[:12] not in response.text
    assert "token [redacted] refused" in response.json()["error"]["message"]


def test_a_method_no_route_takes_is_405_listing_the_paths_methods(client: TestClient) -> None:
    response = client.put("/v1/responses/resp_123", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"input": "x", "temperature": NaN}', "temperature"),
        (b'{"input": "\\ud800 lone surrogate"}', "input"),
        (b'{"input": [' + b"[" * 80 + b"]" * 80 + b"]}", None),
    ],
    ids=["NaN", "lone surrogate", "deep nesting"],
)
def test_hostile_bodies_are_422_and_never_forwarded(
    client: TestClient, responses_route: respx.Route, raw: bytes, param: str | None
) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    response = client.post("/v1/responses", content=raw, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param
    assert not responses_route.called
