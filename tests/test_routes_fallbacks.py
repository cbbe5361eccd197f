"""Fallbacks through the app, against the stand-in upstream on loopback, its models scripted
to fail: 429, 503 loading, 500, a hang, a connection cut before the first byte. The request
moves on only before any byte reached the caller, within its one deadline; the answer names
the model that answered; a key or token never goes to a model it may not use."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from lib.standin import Fault, StandinState
from tests.conftest import CANARY_KEY, CANARY_TOKEN, CANARY_TOKEN_SECRET, sha256_hex
from tests.redis_server import RedisServer
from tests.servers import serve_proxy_and_standin

A, B, C = "org/model-a", "org/model-b", "org/model-c"
E1, E2 = "org/embed-1", "org/embed-2"
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello?"}]
NARROW_KEY = "pg_test_canary_key_narrow"
ONLY_A_KEY = "pg_test_canary_key_only_a"
ADMIN_KEY = "pg_test_canary_admin_fallbacks"
POLICY = f"""
[keys.app]
sha256 = "{sha256_hex(CANARY_KEY)}"
[keys.narrow]
sha256 = "{sha256_hex(NARROW_KEY)}"
models = ["{A}", "{C}"]
[keys.only-a]
sha256 = "{sha256_hex(ONLY_A_KEY)}"
models = ["{A}"]
[admins.ops]
sha256 = "{sha256_hex(ADMIN_KEY)}"
[fallbacks]
"{A}" = ["{B}", "{C}"]
"{E1}" = ["{E2}"]
"""
SETTINGS: dict[str, Any] = {
    "allowed_models": f"{A},{B},{C},{E1},{E2}",
    "default_model": A,
    "keys_toml": POLICY,
    "fallback_timeout_s": 1.0,
    "request_timeout_s": 10.0,
    "fallback_breaker_failures": 100,  # tests of the breaker lower it
}


def auth(key: str = CANARY_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def state() -> StandinState:
    return StandinState(token=CANARY_TOKEN)


@pytest.fixture
def proxy(state: StandinState) -> Iterator[str]:
    with serve_proxy_and_standin(state, **SETTINGS) as url:
        yield url


def models_sent(state: StandinState) -> list[str]:
    return [r["json"]["model"] for r in state.received if r["path"] == CHAT]


def chat(proxy: str, key: str = CANARY_KEY, **body: Any) -> httpx.Response:
    payload = {"model": A, "messages": HELLO, **body}
    return httpx.post(f"{proxy}{CHAT}", json=payload, headers=auth(key), timeout=30)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=429, headers={"Retry-After": "7"}),
        Fault(status=500),
        Fault(status=503),  # the router's "Model is currently loading", estimated_time 20
        Fault(cut_before_first=True),
    ],
    ids=["429", "500", "503-loading", "cut-before-first-byte"],
)
def test_a_failing_model_s_chat_is_answered_by_its_fallback(
    proxy: str, state: StandinState, fault: Fault
) -> None:
    state.model_faults[A] = fault
    started = time.monotonic()
    response = chat(proxy)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == B
    assert response.headers["x-promptgate-fallback"] == B
    assert models_sent(state) == [A, B]
    # Moved on at once: no wait for the loading model's estimated_time nor for Retry-After.
    assert time.monotonic() - started < 3


def test_an_answer_from_the_first_model_carries_no_fallback_header(
    proxy: str, state: StandinState
) -> None:
    response = chat(proxy)
    assert response.status_code == 200 and response.json()["model"] == A
    assert "x-promptgate-fallback" not in response.headers
    assert models_sent(state) == [A]


def test_a_model_that_hangs_is_left_after_fallback_timeout_s(
    proxy: str, state: StandinState
) -> None:
    state.model_faults[A] = Fault(delay_s=30)
    started = time.monotonic()
    response = chat(proxy)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["model"] == B
    assert 1.0 <= elapsed < 4


def test_the_chain_goes_on_to_the_third_model(proxy: str, state: StandinState) -> None:
    state.model_faults[A] = Fault(status=502)
    state.model_faults[B] = Fault(status=429)
    response = chat(proxy)
    assert response.json()["model"] == C and response.headers["x-promptgate-fallback"] == C
    assert models_sent(state) == [A, B, C]


def test_when_every_model_fails_the_caller_gets_the_last_failure(
    proxy: str, state: StandinState
) -> None:
    for model in (A, B):
        state.model_faults[model] = Fault(status=500)
    state.model_faults[C] = Fault(status=429, headers={"Retry-After": "7"})
    response = chat(proxy)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert "x-promptgate-fallback" not in response.headers
    assert models_sent(state) == [A, B, C]


@pytest.mark.parametrize("status", [400, 401, 402, 404, 422])
def test_a_4xx_other_than_429_never_falls_back(
    proxy: str, state: StandinState, status: int
) -> None:
    state.model_faults[A] = Fault(status=status)
    response = chat(proxy)
    assert 400 <= response.status_code < 600 and response.status_code != 200
    assert "x-promptgate-fallback" not in response.headers
    assert models_sent(state) == [A]


def test_a_key_is_never_moved_to_a_model_outside_its_models(
    proxy: str, state: StandinState
) -> None:
    state.model_faults[A] = Fault(status=503)
    response = chat(proxy, NARROW_KEY)
    assert response.json()["model"] == C  # B is not among the key's models
    assert models_sent(state) == [A, C]
    state.received.clear()
    response = chat(proxy, ONLY_A_KEY)
    assert response.status_code == 502  # the upstream's 503, as a gateway answers it
    assert models_sent(state) == [A]


def test_a_token_is_never_moved_to_a_model_outside_its_models(state: StandinState) -> None:
    state.model_faults[A] = Fault(status=503)
    with serve_proxy_and_standin(state, **SETTINGS, token_secret=CANARY_TOKEN_SECRET) as proxy:
        minted = httpx.post(
            f"{proxy}/v1/tokens", json={"user": "alice", "models": [A, C]}, headers=auth()
        )
        token = minted.json()["token"]
        response = chat(proxy, token)
    assert response.json()["model"] == C and response.headers["x-promptgate-fallback"] == C
    assert models_sent(state) == [A, C]


def test_a_model_without_fallbacks_fails_as_before(proxy: str, state: StandinState) -> None:
    state.model_faults[B] = Fault(status=503)
    response = chat(proxy, model=B)
    assert response.status_code == 502
    assert models_sent(state) == [B]


@pytest.mark.parametrize(
    ("deadline_s", "tried"),
    [(3.5, [A, B, C]), (2.5, [A, B])],  # 0.5 s left after B: too little to start C
)
def test_the_deadline_is_shared_not_reset(
    state: StandinState, deadline_s: float, tried: list[str]
) -> None:
    for model in (A, B, C):
        state.model_faults[model] = Fault(delay_s=30)
    settings = {**SETTINGS, "request_timeout_s": deadline_s, "fallback_timeout_s": 1.0}
    with serve_proxy_and_standin(state, **settings) as proxy:
        started = time.monotonic()
        response = chat(proxy)
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    # 1 s on A, 1 s on B, then what was left on C: within the deadline, never fresh budgets.
    assert 1.9 < elapsed < deadline_s + 0.8
    assert models_sent(state) == tried


def test_only_the_last_model_gets_retries(state: StandinState) -> None:
    state.model_faults[A] = Fault(status=429, headers={"Retry-After": "0"})
    state.model_faults[B] = Fault(status=503, headers={"Retry-After": "0"})
    state.faults.append(Fault(status=503, headers={"Retry-After": "0"}))  # C's first try
    with serve_proxy_and_standin(state, **SETTINGS, upstream_max_attempts=2) as proxy:
        response = chat(proxy)
    assert response.status_code == 200 and response.json()["model"] == C
    assert models_sent(state) == [A, B, C, C]


def test_a_stream_falls_back_before_its_first_byte(proxy: str, state: StandinState) -> None:
    state.model_faults[A] = Fault(cut_before_first=True)
    payload = {"model": A, "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{proxy}{CHAT}", json=payload, headers=auth(), timeout=30) as r:
        assert r.status_code == 200 and r.headers["x-promptgate-fallback"] == B
        body = r.read().decode()
    events = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    assert {json.loads(e)["model"] for e in events[:-1]} == {B}
    assert models_sent(state) == [A, B]


def test_a_stream_whose_model_hangs_before_answering_falls_back(
    proxy: str, state: StandinState
) -> None:
    state.model_faults[A] = Fault(delay_s=30)
    payload = {"model": A, "messages": HELLO, "stream": True}
    started = time.monotonic()
    response = httpx.post(f"{proxy}{CHAT}", json=payload, headers=auth(), timeout=30)
    assert response.status_code == 200 and response.headers["x-promptgate-fallback"] == B
    assert response.text.endswith("data: [DONE]\n\n")
    assert 1.0 <= time.monotonic() - started < 4
    assert models_sent(state) == [A, B]


def test_a_stream_that_broke_after_its_first_byte_is_not_moved(
    proxy: str, state: StandinState
) -> None:
    state.model_faults[A] = Fault(cut_after=2)
    payload = {"model": A, "messages": HELLO, "stream": True}
    response = httpx.post(f"{proxy}{CHAT}", json=payload, headers=auth(), timeout=30)
    assert response.status_code == 200
    assert '"error"' in response.text and "[DONE]" not in response.text
    assert models_sent(state) == [A]


def test_the_openai_client_sees_a_normal_answer_from_the_fallback(
    proxy: str, state: StandinState
) -> None:
    state.model_faults[A] = Fault(status=503)
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key=CANARY_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=A, messages=HELLO)
    completion = raw.parse()
    assert raw.headers["x-promptgate-fallback"] == B
    assert completion.model == B and completion.choices[0].message.content
    stream = client.chat.completions.create(
        model=A, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {B}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_generate_falls_back_too(proxy: str, state: StandinState, stream: bool) -> None:
    state.model_faults[A] = Fault(status=429)
    body = {"model": A, "prompt": "Hello?", "stream": stream}
    response = httpx.post(f"{proxy}/api/generate", json=body, headers=auth(), timeout=30)
    assert response.status_code == 200 and response.headers["x-promptgate-fallback"] == B
    if not stream:
        assert response.json()["model"] == B and response.json()["text"]
    assert models_sent(state) == [A, B]


def test_the_ledger_counts_the_model_that_answered(proxy: str, state: StandinState) -> None:
    state.model_faults[A] = Fault(status=503)
    assert chat(proxy).status_code == 200
    del state.model_faults[A]
    assert chat(proxy).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        report = httpx.get(
            f"{proxy}/api/usage", params={"group_by": "model"}, headers=auth(ADMIN_KEY)
        ).json()
        groups = {g["group"]: g for g in report["groups"]}
        if sum(g["requests"] for g in groups.values()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert groups[A]["requests"] == 1 and groups[B]["requests"] == 1
    assert groups[B]["completion_tokens"] > 0 and groups[B]["failed"] == 0


def test_the_breaker_skips_a_model_that_keeps_failing(state: StandinState) -> None:
    state.model_faults[A] = Fault(status=503)
    settings = {**SETTINGS, "fallback_breaker_failures": 2, "fallback_breaker_cooldown_s": 60}
    with serve_proxy_and_standin(state, **settings) as proxy:
        for _ in range(2):
            assert chat(proxy).json()["model"] == B
        assert models_sent(state) == [A, B, A, B]
        state.received.clear()
        response = chat(proxy)
        assert response.json()["model"] == B and response.headers["x-promptgate-fallback"] == B
        assert models_sent(state) == [B]  # A is open: not tried first


def test_when_every_model_is_open_the_first_is_tried(state: StandinState) -> None:
    for model in (A, B, C):
        state.model_faults[model] = Fault(status=500)
    settings = {**SETTINGS, "fallback_breaker_failures": 1}
    with serve_proxy_and_standin(state, **settings) as proxy:
        assert chat(proxy).status_code == 502
        state.received.clear()
        del state.model_faults[A]
        response = chat(proxy)
        assert response.status_code == 200 and response.json()["model"] == A
        assert models_sent(state) == [A]


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_falls_back(proxy: str, state: StandinState, stream: bool) -> None:
    state.model_faults[A] = Fault(status=503)
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key=CANARY_KEY, max_retries=0)
    if stream:
        events = list(client.responses.create(model=A, input="Hello?", stream=True))
        completed = events[-1]
        assert completed.type == "response.completed" and completed.response.model == B
    else:
        raw = client.responses.with_raw_response.create(model=A, input="Hello?")
        assert raw.headers["x-promptgate-fallback"] == B
        assert raw.parse().model == B and raw.parse().output_text
    assert [r["json"]["model"] for r in state.received if r["path"] == "/v1/responses"] == [A, B]


def test_embeddings_fall_back_with_every_batch_on_one_model(state: StandinState) -> None:
    state.model_faults[E1] = Fault(status=429)
    with serve_proxy_and_standin(state, **SETTINGS, embedding_batch_size=2) as proxy:
        client = openai.OpenAI(base_url=f"{proxy}/v1", api_key=CANARY_KEY, max_retries=0)
        raw = client.embeddings.with_raw_response.create(model=E1, input=["a", "b", "c", "d"])
    answer = raw.parse()
    assert raw.headers["x-promptgate-fallback"] == E2 and answer.model == E2
    assert len(answer.data) == 4
    paths = [r["path"] for r in state.received]
    assert all(E2 in p for p in paths if E1 not in p) and sum(E2 in p for p in paths) == 2


def test_a_hung_breaker_store_costs_a_request_one_bound_and_never_fails_it(
    state: StandinState, redis_server: RedisServer
) -> None:
    redis_server.flush()
    state.model_faults[A] = Fault(status=503)
    settings = {**SETTINGS, "redis_url": redis_server.url, "limits_store_timeout_s": 0.5}
    with serve_proxy_and_standin(state, **settings) as proxy:
        assert chat(proxy).json()["model"] == B  # connected, and counted one failure
        with redis_server.stopped():
            started = time.monotonic()
            response = chat(proxy)
            elapsed = time.monotonic() - started
        assert response.status_code == 200 and response.json()["model"] == B
        assert elapsed < 0.5 + 1.5  # one bounded read, then the store rests
        started = time.monotonic()
        with redis_server.stopped():
            assert chat(proxy).json()["model"] == B
        assert time.monotonic() - started < 1.0  # resting: not asked at all
