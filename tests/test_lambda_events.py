"""AWS Lambda: real event shapes through `api.index.handler` (Mangum), warm, in a fresh process.

Each test runs one Python process that imports `api.index` with the environment a Lambda
function would have, then feeds it a series of events, as warm invocations do. The
upstream is the stand-in router, served on loopback by this test process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lib.standin import StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.servers import serve_on_loopback

REPO = Path(__file__).resolve().parent.parent
STANDIN_REPLY = "Hello from the stand-in upstream! You said:"
SOURCE_IP = "203.0.113.7"

# Runs in the child: the Lambda runtime imports the module once, then calls `handler` per event.
_LAMBDA_PROCESS = """
import asyncio, json, sys
import api.index

async def _other_async_work():
    await asyncio.sleep(0)

results = []
for step in json.load(sys.stdin):
    if step == "asyncio.run":
        asyncio.run(_other_async_work())  # as another library or a previous handler might
        results.append(None)
    else:
        results.append(api.index.handler(step, None))
with open(sys.argv[1], "w") as out:
    json.dump(results, out)
"""


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[str, StandinState]]:
    """The stand-in router on loopback, accepting the canary token; yields its URL and state."""
    state = StandinState(token=CANARY_TOKEN)
    with serve_on_loopback(create_standin_app(state)) as url:
        yield url, state


def _invoke(
    steps: list[Any], base_url: str, tmp_path: Path, **extra_env: str
) -> list[dict[str, Any] | None]:
    """Run `steps` (events, or "asyncio.run") through one fresh Lambda process; return replies."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "HF_TOKEN": CANARY_TOKEN,
        "PROXY_API_KEYS": CANARY_KEY,
        "HF_BASE_URL": base_url,
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    out = tmp_path / "replies.json"
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", _LAMBDA_PROCESS, str(out)],
        input=json.dumps(steps),
        cwd=tmp_path,  # no .env there
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


# --- Event shapes, as AWS documents and sends them ---------------------------------------


def _rest_v1(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    query: dict[str, list[str]] | None = None,
    base64_body: bool = False,
    stage: str = "prod",
) -> dict[str, Any]:
    """API Gateway REST API (payload 1.0), proxy integration on `/{proxy+}`."""
    headers = {"Host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com", **(headers or {})}
    multi_headers = {name: [value] for name, value in headers.items()}
    # A header that arrives twice: API Gateway lists both in multiValueHeaders only.
    multi_headers["X-Forwarded-For"] = ["198.51.100.1", SOURCE_IP]
    headers["X-Forwarded-For"] = SOURCE_IP
    text_body = _body_text(body, base64_body)
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "resourceId": "x1y2z3",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": SOURCE_IP, "userAgent": "test-agent"},
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "requestTimeEpoch": 1764150000000,
        },
        "body": text_body,
        "isBase64Encoded": base64_body,
    }


def _v2(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    query: dict[str, list[str]] | None = None,
    base64_body: bool = False,
    stage: str = "$default",
    domain: str = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
) -> dict[str, Any]:
    """Payload format 2.0: HTTP API, and (with its own domain) a Lambda Function URL."""
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    raw_query = "&".join(f"{k}={v}" for k, values in (query or {}).items() for v in values)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": {
            "host": domain,
            "x-forwarded-for": SOURCE_IP,
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            **{name.lower(): value for name, value in (headers or {}).items()},
        },
        **({"queryStringParameters": {k: ",".join(v) for k, v in query.items()}} if query else {}),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": domain.split(".")[0],
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": "test-agent",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": stage,
            "time": "26/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1764150000000,
        },
        **({"body": _body_text(body, base64_body)} if body is not None else {}),
        "isBase64Encoded": base64_body,
    }


def _function_url(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """A Lambda Function URL event: payload 2.0 on the function's own lambda-url domain."""
    return _v2(method, path, domain="abcdefghijklmn.lambda-url.us-east-1.on.aws", **kwargs)


def _body_text(body: bytes | None, base64_body: bool) -> str | None:
    if body is None:
        return None
    return base64.b64encode(body).decode() if base64_body else body.decode()


SHAPES = {"rest_v1": _rest_v1, "http_api_v2": _v2, "function_url": _function_url}

# --- Reading replies -------------------------------------------------------------------


def _header(reply: dict[str, Any], name: str) -> str:
    for key, value in (reply.get("headers") or {}).items():
        if key.lower() == name:
            return value
    for key, values in (reply.get("multiValueHeaders") or {}).items():
        if key.lower() == name:
            return ", ".join(values)
    return ""


def _body(reply: dict[str, Any]) -> str:
    body = reply.get("body") or ""
    return base64.b64decode(body).decode() if reply.get("isBase64Encoded") else body


def _json(reply: dict[str, Any]) -> Any:
    return json.loads(_body(reply))


def _chat(text: str, *, stream: bool = False) -> bytes:
    body = {"messages": [{"role": "user", "content": text}], "stream": stream}
    return json.dumps(body).encode()


AUTH = {"Authorization": f"Bearer {CANARY_KEY}", "Content-Type": "application/json"}


def _assert_sse_answer(reply: dict[str, Any], said: str) -> None:
    """A streamed chat under Mangum: one buffered reply holding every event and [DONE]."""
    assert reply["statusCode"] == 200, _body(reply)
    assert _header(reply, "content-type").startswith("text/event-stream")
    events = [block for block in _body(reply).split("\n\n") if block.strip()]
    assert events[-1] == "data: [DONE]"
    deltas = [json.loads(e.removeprefix("data: "))["choices"] for e in events[:-1]]
    text = "".join(c[0]["delta"].get("content") or "" for c in deltas if c)
    assert text == f"{STANDIN_REPLY} {said}"
    assert deltas[-1][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("shape", SHAPES)
def test_warm_invocations_serve_every_route(
    shape: str, standin: tuple[str, StandinState], tmp_path: Path
) -> None:
    """One process, many events: every route and error, before and after an asyncio.run()."""
    url, state = standin
    make = SHAPES[shape]
    query = {"probe": ["1", "2"]}
    steps: list[Any] = [
        make("GET", "/api/health", query=query),
        make("POST", "/v1/chat/completions", headers=AUTH, body=_chat(f"{shape} one")),
        make(
            "POST",
            "/v1/chat/completions",
            headers=AUTH,
            body=_chat(f"{shape} two"),
            base64_body=True,
        ),
        make("POST", "/v1/chat/completions", headers=AUTH, body=_chat(f"{shape} sse", stream=True)),
        make(
            "POST",
            "/v1/chat/completions",
            headers={"Content-Type": "application/json"},
            body=_chat("x"),
        ),
        make("GET", "/no/such/route", headers=AUTH),
        make("POST", "/v1/chat/completions", headers=AUTH, body=b'{"messages": "not a list"}'),
        "asyncio.run",
        make("GET", "/api/health"),
        make("POST", "/v1/chat/completions", headers=AUTH, body=_chat(f"{shape} after")),
        make(
            "POST", "/v1/chat/completions", headers=AUTH, body=_chat(f"{shape} sse2", stream=True)
        ),
    ]
    received_before = len(state.received)
    replies = _invoke(steps, url, tmp_path)
    health, chat, chat_b64, sse, no_key, no_route, invalid, _, health2, chat2, sse2 = replies

    for reply in (health, health2):
        assert reply["statusCode"] == 200, _body(reply)
        assert _json(reply)["status"] == "ok"
        assert _json(reply)["token_configured"] is True
    for reply, said in ((chat, "one"), (chat_b64, "two"), (chat2, "after")):
        assert reply["statusCode"] == 200, _body(reply)
        answer = _json(reply)["choices"][0]["message"]["content"]
        assert answer == f"{STANDIN_REPLY} {shape} {said}"
        assert _header(reply, "x-request-id")
    _assert_sse_answer(sse, f"{shape} sse")
    _assert_sse_answer(sse2, f"{shape} sse2")

    assert no_key["statusCode"] == 401
    assert _json(no_key)["error"]["type"] == "authentication_error"
    assert no_route["statusCode"] == 404
    assert _json(no_route)["error"]["code"] == "not_found"
    assert "/no/such/route" in _json(no_route)["error"]["message"]
    assert invalid["statusCode"] == 422
    assert _json(invalid)["error"]["param"] == "messages"

    # The upstream saw exactly the five authorised chats, with the server's token.
    upstream_calls = state.received[received_before:]
    assert len(upstream_calls) == 5
    assert {c["headers"]["authorization"] for c in upstream_calls} == {f"Bearer {CANARY_TOKEN}"}
    for reply in replies:
        assert reply is None or CANARY_TOKEN not in json.dumps(reply)


def test_rest_v1_multi_value_headers_reach_the_app(
    standin: tuple[str, StandinState], tmp_path: Path
) -> None:
    """The client key arriving only in multiValueHeaders (as API Gateway may send it) counts."""
    url, _ = standin
    event = _rest_v1("GET", "/v1/models", headers={})
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {CANARY_KEY}"]
    denied = _rest_v1("GET", "/v1/models", headers={})
    (allowed, refused) = _invoke([event, denied], url, tmp_path)
    assert allowed["statusCode"] == 200, _body(allowed)
    assert _json(allowed)["data"][0]["id"] == "HuggingFaceTB/SmolLM3-3B"
    assert refused["statusCode"] == 401


def test_stage_prefix_needs_api_gateway_base_path(
    standin: tuple[str, StandinState], tmp_path: Path
) -> None:
    """A named HTTP API stage stays in the path: 404 unless API_GATEWAY_BASE_PATH strips it."""
    url, _ = standin
    staged = [
        _v2("GET", "/api/health", stage="prod"),
        _v2("POST", "/v1/chat/completions", headers=AUTH, body=_chat("staged"), stage="prod"),
        # REST APIs pass the path without the stage: unaffected by the setting.
        _rest_v1("GET", "/api/health", stage="prod"),
    ]
    unset = _invoke(staged, url, tmp_path)
    assert unset[0]["statusCode"] == 404
    assert "/prod/api/health" in _json(unset[0])["error"]["message"]
    assert unset[2]["statusCode"] == 200

    health, chat, rest = _invoke(staged, url, tmp_path, API_GATEWAY_BASE_PATH="/prod")
    assert health["statusCode"] == 200, _body(health)
    assert chat["statusCode"] == 200, _body(chat)
    assert _json(chat)["choices"][0]["message"]["content"] == f"{STANDIN_REPLY} staged"
    assert rest["statusCode"] == 200


def test_responses_api_under_lambda(standin: tuple[str, StandinState], tmp_path: Path) -> None:
    """`/v1/responses` through Mangum: one buffered reply, streamed events and all."""
    url, _ = standin
    plain, streamed, stored = _invoke(
        [
            _v2("POST", "/v1/responses", headers=AUTH, body=b'{"input": "lambda"}'),
            _v2("POST", "/v1/responses", headers=AUTH, body=b'{"input": "sse", "stream": true}'),
            _v2("GET", "/v1/responses/resp_1", headers=AUTH),
        ],
        url,
        tmp_path,
    )
    assert plain["statusCode"] == 200, _body(plain)
    assert _json(plain)["output"][0]["content"][0]["text"] == f"{STANDIN_REPLY} lambda"
    assert streamed["statusCode"] == 200, _body(streamed)
    events = [block for block in _body(streamed).split("\n\n") if block.strip()]
    assert events[0].startswith("event: response.created\n")
    assert events[-1].startswith("event: response.completed\n")
    assert stored["statusCode"] == 404 and _json(stored)["error"]["code"] == "not_stored"
