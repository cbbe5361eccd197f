"""Rate limits and token budgets through the app, on the in-process store and on a real Redis.

Windows move with an injected clock, never by sleeping.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from tests.conftest import AUTH, CANARY_KEY, Clock, chat_completion, chunk, make_settings, sse
from tests.secret_audit import audited

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC: a minute's first second
UNTIL_MIDNIGHT = 16 * 3600
KEY_SHA256 = hashlib.sha256(CANARY_KEY.encode()).hexdigest()
OTHER_KEY = "pg_test_canary_key_other"
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


def reserve_for(body: dict[str, Any], cap: int = 0) -> int:
    """What admission holds for `body` sent as httpx sends JSON: its bytes / 4, plus the cap."""
    return math.ceil(len(json.dumps(body, separators=(",", ":")).encode()) / 4) + cap


HELLO_RESERVE = reserve_for(HELLO)  # 13


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def policy(key: str = "app", **fields: Any) -> str:
    """A policy file with one named key (the canary key) holding `fields`."""
    lines = [f"[keys.{key}]", f'sha256 = "{KEY_SHA256}"']
    lines += [f"{name} = {json.dumps(value)}" for name, value in fields.items()]
    return "\n".join(lines) + "\n"


def limited_client(
    upstream: respx.Router, clock: Clock, store_url: str | None, keys_toml: str, **settings: Any
) -> TestClient:
    # A generous bound: these tests are about what is counted, on a loaded machine; the bound
    # itself is tested in test_access_redis_store.py.
    settings = {"limits_store_timeout_s": 2.0, "limits_on_store_error": "closed", **settings}
    app = create_app(
        make_settings(keys_toml=keys_toml, redis_url=store_url, **settings),
        transport=httpx.MockTransport(upstream.async_handler),
        clock=clock,
    )
    return TestClient(audited(app), raise_server_exceptions=False)


def test_requests_over_rpm_get_429_with_retry_after_and_openai_headers(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with limited_client(upstream, clock, store_url, policy(rpm=3)) as client:
        remaining = []
        for _ in range(3):
            response = client.post(CHAT, json=HELLO, headers=AUTH)
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit-requests"] == "3"
            assert response.headers["x-ratelimit-reset-requests"] == "1m0s"
            remaining.append(response.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]

        refused = client.post(CHAT, json=HELLO, headers=AUTH)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert "3 requests per minute" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "60"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(upstream.calls) == 3

        clock.now += 45
        assert client.post(CHAT, json=HELLO, headers=AUTH).headers["retry-after"] == "15"
        clock.now += 15  # the next minute
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200


def test_day_budget_refuses_the_request_it_cannot_fit_and_says_do_not_retry(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())  # 5 tokens each
    daily = 10 + HELLO_RESERVE
    with limited_client(upstream, clock, store_url, policy(daily_tokens=daily)) as client:
        statuses = [client.post(CHAT, json=HELLO, headers=AUTH).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]  # 0, 5 and 10 tokens spent before each
        refused = client.post(CHAT, json=HELLO, headers=AUTH)  # 15 spent: its reserve won't fit
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        message = refused.json()["error"]["message"]
        assert f"cannot fit this request in its {daily} tokens for today" in message
        assert f"may use up to {HELLO_RESERVE} tokens" in message
        assert f"{daily - 15} are left" in message
        assert refused.headers["x-should-retry"] == "false"
        assert refused.headers["retry-after"] == str(UNTIL_MIDNIGHT)
        assert refused.headers["x-ratelimit-limit-tokens"] == str(daily)
        assert refused.headers["x-ratelimit-remaining-tokens"] == str(daily - 15)
        assert refused.headers["x-ratelimit-reset-tokens"] == "16h0m0s"
        clock.now += UNTIL_MIDNIGHT
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200


def test_tokens_per_minute_refuse_until_the_next_minute(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    tpm = 5 + HELLO_RESERVE
    with limited_client(upstream, clock, store_url, policy(tpm=tpm)) as client:
        first = client.post(CHAT, json=HELLO, headers=AUTH)
        # The remaining tokens are what is left once this request's reserve is held.
        assert first.headers["x-ratelimit-remaining-tokens"] == str(tpm - HELLO_RESERVE)
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200  # 5 spent
        refused = client.post(CHAT, json=HELLO, headers=AUTH)  # 10 spent
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert f"{tpm} tokens per minute" in refused.json()["error"]["message"]
        clock.now += 60
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200


def test_global_daily_tokens_cap_every_key_together(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with limited_client(
        upstream,
        clock,
        store_url,
        policy(),
        proxy_api_keys=f"{CANARY_KEY},{OTHER_KEY}",
        global_daily_tokens=9 + HELLO_RESERVE,  # two fit, not a third
    ) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        assert client.post(CHAT, json=HELLO, headers=OTHER).status_code == 200
        for headers in (AUTH, OTHER):
            refused = client.post(CHAT, json=HELLO, headers=headers)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "insufficient_quota"
            assert "This deployment's daily token budget cannot fit this request" in refused.text
            assert refused.headers["x-should-retry"] == "false"


def test_key_cap_on_max_tokens_is_sent_when_absent_and_refused_when_exceeded(
    upstream: respx.Router, clock: Clock
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    with limited_client(upstream, clock, None, policy(max_tokens=64, rpm=5)) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        assert json.loads(route.calls.last.request.content)["max_tokens"] == 64
        client.post(CHAT, json={**HELLO, "max_tokens": 10}, headers=AUTH)
        assert json.loads(route.calls.last.request.content)["max_tokens"] == 10
        for field in ("max_tokens", "max_completion_tokens"):
            refused = client.post(CHAT, json={**HELLO, field: 65}, headers=AUTH)
            assert refused.status_code == 400
            assert refused.json()["error"]["param"] == field
            assert "cap of 64 tokens" in refused.json()["error"]["message"]
        refused = client.post(
            "/api/generate", json={"prompt": "x", "max_tokens": 100}, headers=AUTH
        )
        assert refused.status_code == 400 and "64" in refused.json()["error"]["message"]
        assert len(route.calls) == 2
        # Requests count when admitted, before their body is read: the refused ones too.
        limits = client.get("/api/limits", headers=AUTH).json()
        assert limits["remaining"]["requests_this_minute"] == 0


def test_key_models_narrow_the_allowlist(upstream: respx.Router, clock: Clock) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    toml = policy(models=["Qwen/Qwen2.5-7B-Instruct"])
    allowed = "HuggingFaceTB/SmolLM3-3B,Qwen/Qwen2.5-7B-Instruct"
    with limited_client(upstream, clock, None, toml, allowed_models=allowed) as client:
        refused = client.post(CHAT, json=HELLO, headers=AUTH)  # the default model
        assert refused.status_code == 403
        assert "not allowed for this key" in refused.json()["error"]["message"]
        body = {**HELLO, "model": "Qwen/Qwen2.5-7B-Instruct:groq"}
        assert client.post(CHAT, json=body, headers=AUTH).status_code == 200


def test_stream_hides_the_usage_chunk_unless_asked_and_counts_its_tokens(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    body = sse(chunk("Hi"), chunk(" there", "stop"), chunk(usage=usage), "[DONE]")
    route = upstream.post(CHAT).respond(
        200, content=body, headers={"content-type": "text/event-stream"}
    )
    with limited_client(upstream, clock, store_url, policy(tpm=200, rpm=10)) as client:
        hidden = client.post(CHAT, json={**HELLO, "stream": True}, headers=AUTH)
        assert hidden.status_code == 200
        assert hidden.headers["x-ratelimit-limit-requests"] == "10"
        sent = json.loads(route.calls.last.request.content)
        assert sent["stream_options"] == {"include_usage": True}
        assert '"usage": {' not in hidden.text and '"prompt_tokens"' not in hidden.text
        assert hidden.text.count("data: ") == 3 and hidden.text.endswith("data: [DONE]\n\n")

        asked = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
        shown = client.post(CHAT, json=asked, headers=AUTH)
        assert '"prompt_tokens": 7' in shown.text and shown.text.count("data: ") == 4

        remaining = client.get("/api/limits", headers=AUTH).json()["remaining"]
        assert remaining["tokens_this_minute"] == 200 - 2 * 11


def test_stream_without_usage_is_counted_from_its_text(
    upstream: respx.Router, clock: Clock
) -> None:
    body = sse(chunk("12345678"), chunk("1234", "stop"), "[DONE]")  # 12 chars: 3 tokens
    upstream.post(CHAT).respond(200, content=body, headers={"content-type": "text/event-stream"})
    prompt = {"messages": [{"role": "user", "content": "x" * 20}], "stream": True}  # 5 tokens
    with limited_client(upstream, clock, None, policy(tpm=100)) as client:
        assert client.post(CHAT, json=prompt, headers=AUTH).status_code == 200
        remaining = client.get("/api/limits", headers=AUTH).json()["remaining"]
        assert remaining["tokens_this_minute"] == 100 - 8


def test_api_limits_reports_the_callers_key_policy_and_what_remains(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    toml = "[defaults]\nmax_tokens = 256\n" + policy(
        "mobile-app", rpm=600, daily_tokens=5_000_000, expires="2027-01-31T12:00:00Z"
    ).replace('"2027-01-31T12:00:00Z"', "2027-01-31T12:00:00Z")
    with limited_client(upstream, clock, store_url, toml, global_daily_tokens=10**9) as client:
        assert client.get("/api/limits").status_code == 401
        client.post(CHAT, json=HELLO, headers=AUTH)
        clock.now += 30
        report = client.get("/api/limits", headers=AUTH)
        assert report.status_code == 200
        assert "x-ratelimit-limit-requests" not in report.headers  # reading is not a request
        assert report.json() == {
            "key": "mobile-app",
            "user": None,
            "policy": {
                "rpm": 600,
                "tpm": None,
                "daily_tokens": 5_000_000,
                "max_tokens": 256,
                "models": None,
                "expires": "2027-01-31T12:00:00+00:00",
            },
            "remaining": {
                "requests_this_minute": 599,
                "tokens_this_minute": None,
                "tokens_today": 5_000_000 - 5,
                "deployment_tokens_today": 10**9 - 5,
                "minute_resets_in_s": 30,
                "day_resets_in_s": UNTIL_MIDNIGHT - 30,
            },
            "key_policy": None,
            "key_remaining": None,
            "nearest_limit": "key",
            "limits_store": "redis" if store_url else "memory",
        }


def test_embeddings_and_task_routes_are_charged_an_estimate_of_their_text(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    model = "sentence-transformers/all-MiniLM-L6-v2"
    upstream.post(f"/hf-inference/models/{model}/pipeline/feature-extraction").respond(
        200, json=[[0.1, 0.2]]
    )
    upstream.post(f"/hf-inference/models/{model}").respond(200, json=[0.5])
    with limited_client(upstream, clock, store_url, policy(rpm=2, tpm=100)) as client:
        text = "one two three four"  # 18 characters: 5 tokens
        embedded = client.post("/v1/embeddings", json={"input": text}, headers=AUTH)
        assert embedded.status_code == 200
        assert embedded.headers["x-ratelimit-remaining-requests"] == "1"
        task = client.post(f"/models/{model}", json={"inputs": "x" * 8}, headers=AUTH)
        assert task.status_code == 200  # 8 characters: 2 tokens
        refused = client.post(f"/models/{model}", json={"inputs": "x"}, headers=AUTH)
        assert refused.status_code == 429
        assert refused.json()["error_type"] == "overloaded"  # huggingface_hub's shape
        assert "requests per minute" in refused.headers["x-error-message"]
        remaining = client.get("/api/limits", headers=AUTH).json()["remaining"]
        assert remaining["tokens_this_minute"] == 100 - 5 - 2


def test_log_line_names_the_key_its_tokens_and_the_limit_that_refused(
    upstream: respx.Router, clock: Clock, log_lines: list[str]
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with limited_client(upstream, clock, None, policy(rpm=1)) as client:
        client.post(CHAT, json=HELLO, headers=AUTH)
        client.post(CHAT, json=HELLO, headers=AUTH)
    admitted, refused = (json.loads(line) for line in log_lines)
    assert admitted["key"] == "app" and admitted["limited_by"] is None
    assert (admitted["prompt_tokens"], admitted["completion_tokens"]) == (3, 2)
    assert refused["key"] == "app" and refused["limited_by"] == "rpm"
    assert refused["status"] == 429 and refused["prompt_tokens"] is None
    assert CANARY_KEY not in "".join(log_lines) and KEY_SHA256 not in "".join(log_lines)


def test_without_limits_nothing_is_counted_and_no_limit_headers_are_sent(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    response = client.post(CHAT, json=HELLO, headers=AUTH)
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("x-ratelimit")]
    report = client.get("/api/limits", headers=AUTH).json()
    assert report["remaining"]["requests_this_minute"] is None


def test_anonymous_callers_share_the_default_limits(upstream: respx.Router, clock: Clock) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with limited_client(
        upstream, clock, None, "[defaults]\nrpm = 2\n", proxy_api_keys="", allow_anonymous=True
    ) as client:
        assert client.post(CHAT, json=HELLO).status_code == 200
        assert client.post(CHAT, json=HELLO, headers=OTHER).status_code == 200
        assert client.post(CHAT, json=HELLO).status_code == 429
        assert client.get("/api/limits").json()["key"] == "anonymous"


def test_generate_counts_its_tokens_streamed_or_not(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    body = sse(chunk("Hi"), chunk(" there", "stop"), chunk(usage=usage), "[DONE]")
    upstream.post(CHAT).mock(
        side_effect=[
            httpx.Response(200, json=chat_completion()),
            httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}),
        ]
    )
    with limited_client(upstream, clock, store_url, policy(tpm=100)) as client:
        assert client.post("/api/generate", json={"prompt": "x"}, headers=AUTH).status_code == 200
        streamed = client.post("/api/generate", json={"prompt": "x", "stream": True}, headers=AUTH)
        assert '"prompt_tokens":7' in streamed.text  # /api/generate always shows its usage
        remaining = client.get("/api/limits", headers=AUTH).json()["remaining"]
        assert remaining["tokens_this_minute"] == 100 - 5 - 11


def test_a_key_past_its_limit_is_refused_before_its_body_is_read(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with limited_client(upstream, clock, store_url, policy(rpm=1)) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        headers = {**AUTH, "Content-Type": "application/json"}
        refused = client.post(CHAT, content=b"{not json", headers=headers)
        assert refused.status_code == 429  # not 422: the body was never read
        assert client.get("/v1/models", headers=AUTH).status_code == 200  # reads are not counted


def test_responses_api_is_admitted_capped_and_counted(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    answer = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [],
        "usage": {"input_tokens": 6, "output_tokens": 4, "total_tokens": 10},
    }
    route = upstream.post("/v1/responses").respond(200, json=answer)
    with limited_client(upstream, clock, store_url, policy(tpm=100, max_tokens=50)) as client:
        response = client.post("/v1/responses", json={"input": "Hi"}, headers=AUTH)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-tokens"] == "100"
        assert json.loads(route.calls.last.request.content)["max_output_tokens"] == 50
        refused = client.post(
            "/v1/responses", json={"input": "Hi", "max_output_tokens": 51}, headers=AUTH
        )
        assert refused.status_code == 400 and "cap of 50" in refused.text
        remaining = client.get("/api/limits", headers=AUTH).json()["remaining"]
        assert remaining["tokens_this_minute"] == 100 - 10
