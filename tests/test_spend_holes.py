"""Spend control as an attacker tries it: the proxy under uvicorn (h11) in front of the stand-in,
over real sockets, on the in-process store and on a real Redis.

A key with `daily_tokens`, `tpm` and `max_tokens` but no `rpm`. Each test reads the key's
day counter through `/api/limits` and compares it with what the upstream produced.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lib.standin import Fault, StandinState
from tests.conftest import CANARY_TOKEN, CANARY_TOKEN_SECRET
from tests.servers import serve_proxy_and_standin

KEY = "pg_test_canary_key_spender"
AUTH = {"Authorization": f"Bearer {KEY}"}
CAP = 64
DAILY = 100_000
MODEL = "HuggingFaceTB/SmolLM3-3B"
GENERATOR = "openai-community/gpt2"
STANDIN_PREAMBLE = "Hello from the stand-in upstream! You said: "


def key_policy(**fields: Any) -> str:
    values = {"daily_tokens": DAILY, "tpm": DAILY, "max_tokens": CAP, **fields}
    lines = ["[keys.spender]", f'sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"']
    lines += [f"{name} = {value}" for name, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def estimate(chars: int) -> int:
    """The proxy's documented estimate: four characters a token, rounded up."""
    return math.ceil(chars / 4)


@dataclass
class Live:
    url: str
    state: StandinState

    def spent_today(self, headers: dict[str, str] = AUTH, holder: str = "remaining") -> int:
        report = httpx.get(f"{self.url}/api/limits", headers=headers, timeout=10).json()
        return DAILY - report[holder]["tokens_today"]

    def settled_spend(self, ends_before: int) -> int:
        """The day counter once the stream that was open has ended upstream (its charge is
        written before the upstream is closed)."""
        deadline = time.monotonic() + 10
        while len(self.state.stream_ends) <= ends_before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        return self.spent_today()

    def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str] = AUTH
    ) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)


@contextmanager
def live_proxy(
    store_url: str | None, keys_toml: str | None = None, **settings: Any
) -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    values: dict[str, Any] = {
        "keys_toml": keys_toml or key_policy(),
        "proxy_api_keys": "",
        "redis_url": store_url,
        "allowed_models": f"{MODEL},{GENERATOR}",
        "token_secret": CANARY_TOKEN_SECRET,
        "limits_on_store_error": "closed",
        "limits_store_timeout_s": 2.0,
        **settings,
    }
    with serve_proxy_and_standin(state, **values) as url:
        yield Live(url, state)


@pytest.fixture
def live(store_url: str | None) -> Iterator[Live]:
    with live_proxy(store_url) as proxy:
        yield proxy


PROMPT = "tell me a long story about proxies and keys and budgets"
ANSWER = STANDIN_PREAMBLE + PROMPT  # what the stand-in says back, word by word
STREAMS = {
    "responses": ("/v1/responses", {"input": PROMPT, "stream": True}, "response.output_text.delta"),
    "chat": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": PROMPT}], "stream": True},
        '"content"',
    ),
    "generate": ("/api/generate", {"prompt": PROMPT, "stream": True}, '"text"'),
}


@pytest.mark.parametrize("route", list(STREAMS))
@pytest.mark.parametrize("deltas_read", [1, 3])
def test_a_stream_hung_up_on_is_charged_its_prompt_and_the_text_relayed(
    live: Live, route: str, deltas_read: int
) -> None:
    path, body, marker = STREAMS[route]
    live.state.token_delay_s = 0.1  # one word every 0.1 s: time to hang up mid-answer
    ends = len(live.state.stream_ends)
    seen = 0
    with httpx.stream("POST", f"{live.url}{path}", json=body, headers=AUTH, timeout=30) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            seen += line.startswith("data: ") and marker in line
            if seen == deltas_read:
                break  # hang up mid-stream
    spent = live.settled_spend(ends)
    assert live.state.stream_ends[-1].completed is False
    # No usage came: the prompt and the words relayed (at least those read, never the whole
    # answer), at four characters a token; and the reservation (with the cap) was settled.
    prompt = estimate(len(PROMPT))
    at_least = prompt + (1 if deltas_read > 1 else 0)  # a first chat delta may be empty
    assert at_least <= spent < prompt + estimate(len(ANSWER))


def _response_without_usage(text: str) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": MODEL,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
    }


def _named(kind: str, sequence: int, **fields: Any) -> str:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {data}\n\n"


@pytest.mark.parametrize("shape", ["plain", "streamed", "streamed then broken"])
def test_responses_without_usage_are_charged_an_estimate_of_the_output(
    live: Live, shape: str
) -> None:
    text = "forty characters of generated answer ..."
    started = {"id": "resp_1", "status": "in_progress", "output": []}
    if shape == "plain":
        fault = Fault(body=json.dumps(_response_without_usage(text)).encode())
    else:
        events = _named("response.created", 0, response=started)
        events += _named("response.output_text.delta", 1, delta=text[:20])
        events += _named("response.output_text.delta", 2, delta=text[20:])
        if shape == "streamed":
            events += _named("response.completed", 3, response=_response_without_usage(text))
        fault = Fault(body=events.encode(), content_type="text/event-stream")
    live.state.faults.append(fault)
    before = live.spent_today()
    answer = live.post("/v1/responses", {"input": "x" * 30, "stream": shape != "plain"})
    assert answer.status_code == 200
    if shape == "streamed then broken":
        assert "event: error" in answer.text
    assert live.spent_today() - before == estimate(30) + estimate(len(text))


# (route, body, the refusal's status and param): every length field a route's upstream
# honours, with values a cap check looking only at the first field, or only at integers, missed.
_TASK = f"/models/{GENERATOR}"
_CHAT = "/v1/chat/completions"
_MESSAGES = {"messages": [{"role": "user", "content": "hi"}]}
REFUSED = [
    (_CHAT, {"max_completion_tokens": 1, "max_tokens": 100_000}, 400, "max_tokens"),
    (_CHAT, {"max_tokens": 1, "max_completion_tokens": 100_000}, 400, "max_completion_tokens"),
    (_CHAT, {"max_completion_tokens": 100_000.0}, 400, "max_completion_tokens"),
    (_CHAT, {"max_completion_tokens": "100000"}, 422, "max_completion_tokens"),
    (_CHAT, {"max_completion_tokens": True}, 422, "max_completion_tokens"),
    (_CHAT, {"max_completion_tokens": 12.5}, 422, "max_completion_tokens"),
    (_CHAT, {"n": 2, "max_tokens": CAP}, 400, "max_tokens"),
    (_CHAT, {"n": CAP + 1}, 400, "n"),
    (_CHAT, {"n": "2"}, 422, "n"),
    ("/v1/responses", {"max_output_tokens": 10, "max_tokens": 100_000}, 400, "max_tokens"),
    ("/v1/responses", {"max_output_tokens": 10, "max_tokens": "9"}, 422, "max_tokens"),
    ("/v1/responses", {"max_completion_tokens": CAP + 1}, 400, "max_completion_tokens"),
    (_TASK, {"parameters": {"max_new_tokens": 100_000}}, 400, "max_new_tokens"),
    (_TASK, {"parameters": {"max_new_tokens": "100000"}}, 422, "max_new_tokens"),
    (
        f"{_TASK}/pipeline/text-generation",
        {"parameters": {"max_tokens": CAP * 2}},
        400,
        "max_tokens",
    ),
]


def _body_for(path: str, extra: dict[str, Any]) -> dict[str, Any]:
    if path == _CHAT:
        return {**_MESSAGES, **extra}
    if path == "/v1/responses":
        return {"input": "hi", **extra}
    return {"inputs": "hi", **extra}


@pytest.mark.parametrize(("path", "extra", "status", "param"), REFUSED)
def test_a_length_field_past_the_cap_or_not_an_integer_is_refused_before_the_upstream(
    live: Live, path: str, extra: dict[str, Any], status: int, param: str
) -> None:
    answer = live.post(path, _body_for(path, extra))
    assert answer.status_code == status, answer.text
    assert param in answer.text
    assert not live.state.received  # nothing went upstream
    assert live.spent_today() == 0  # the reservation was given back


# (route, body, where the upstream must find the limit, the value it must find there).
SENT = [
    (_CHAT, {}, ("max_tokens",), CAP),
    (_CHAT, {"max_completion_tokens": 10}, ("max_completion_tokens",), 10),
    (_CHAT, {"max_tokens": 20.0}, ("max_tokens",), 20),
    (_CHAT, {"n": 4}, ("max_tokens",), CAP // 4),
    (_CHAT, {"max_tokens": None}, ("max_tokens",), CAP),
    ("/api/generate", {"prompt": "hi"}, ("max_tokens",), CAP),
    ("/v1/responses", {}, ("max_output_tokens",), CAP),
    ("/v1/responses", {"max_output_tokens": 7}, ("max_output_tokens",), 7),
    (_TASK, {}, ("parameters", "max_new_tokens"), CAP),
    (_TASK, {"parameters": {"max_new_tokens": 5, "top_k": 2}}, ("parameters", "max_new_tokens"), 5),
    (f"{_TASK}/pipeline/text-generation", {}, ("parameters", "max_new_tokens"), CAP),
]


@pytest.mark.parametrize(("path", "extra", "where", "value"), SENT)
def test_the_upstream_always_receives_a_completion_limit_within_the_cap(
    live: Live, path: str, extra: dict[str, Any], where: tuple[str, ...], value: int
) -> None:
    body = extra if path == "/api/generate" else _body_for(path, extra)
    answer = live.post(path, body)
    assert answer.status_code == 200, answer.text
    sent: Any = live.state.received[-1]["json"]
    for name in where:
        sent = sent[name]
    assert sent == value and type(sent) is int


def test_a_text_generation_task_is_charged_its_input_and_generated_text(live: Live) -> None:
    inputs = "Once upon a time, a proxy"
    answer = live.post(f"{_TASK}/pipeline/text-generation", {"inputs": inputs})
    assert answer.status_code == 200
    generated = answer.json()[0]["generated_text"]
    assert live.spent_today() == estimate(len(inputs)) + estimate(len(generated))


def test_concurrent_requests_cannot_overshoot_a_day_budget_without_rpm(
    store_url: str | None,
) -> None:
    daily = 300
    with live_proxy(store_url, key_policy(daily_tokens=daily, tpm=None, max_tokens=20)) as proxy:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"messages": [{"role": "user", "content": "one two three four"}]}
                return await asyncio.gather(
                    *(
                        client.post(f"{proxy.url}{_CHAT}", json=body, headers=AUTH)
                        for _ in range(40)
                    )
                )

        answers = asyncio.run(burst())
        admitted = [a for a in answers if a.status_code == 200]
        assert {a.status_code for a in answers} == {200, 429}
        produced = sum(a.json()["usage"]["total_tokens"] for a in admitted)
        report = httpx.get(f"{proxy.url}/api/limits", headers=AUTH).json()
        spent = daily - report["remaining"]["tokens_today"]
        # Each reservation (its bytes / 4 + the cap of 20) was held until it settled to the
        # usage reported: the day counts exactly what the upstream produced, within budget.
        assert spent == produced <= daily
        assert len(proxy.state.received) == len(admitted)

        large = {"messages": [{"role": "user", "content": "word " * 2_500}]}  # ~3,100 tokens
        refused = proxy.post(_CHAT, large)
        assert refused.status_code == 429
        assert "may use up to" in refused.json()["error"]["message"]
        assert len(proxy.state.received) == len(admitted)  # it reached nothing


def _mint(live: Live, **ask: Any) -> dict[str, str]:
    minted = live.post("/v1/tokens", {"user": "alice", **ask})
    assert minted.status_code == 200, minted.text
    return {"Authorization": f"Bearer {minted.json()['token']}"}


def test_a_refusal_by_the_key_spends_nothing_of_the_users_limits(store_url: str | None) -> None:
    body = _body_for(_CHAT, {})  # 45 bytes: a reserve of 12 + the cap; the stand-in counts 9
    reserve = estimate(len(json.dumps(body, separators=(",", ":")))) + CAP
    daily = reserve + 5  # one request fits the key's day, not a second
    with live_proxy(store_url, key_policy(daily_tokens=daily)) as proxy:
        alice = _mint(proxy, rpm=2)
        assert proxy.post(_CHAT, body, alice).status_code == 200
        refused = proxy.post(_CHAT, body, alice)
        assert refused.status_code == 429
        assert "Key 'spender' cannot fit" in refused.json()["error"]["message"]
        report = httpx.get(f"{proxy.url}/api/limits", headers=alice).json()
        # The user's minute holds the one request admitted, not the one the key refused.
        assert report["remaining"]["requests_this_minute"] == 1
        assert report["key_remaining"]["tokens_today"] == daily - 9
        assert report["nearest_limit"] == "key"


def test_api_limits_shows_a_token_holder_the_keys_limits_and_the_nearer_one(live: Live) -> None:
    alice = _mint(live, daily_tokens=1_000)
    assert live.post(_CHAT, _body_for(_CHAT, {}), alice).status_code == 200
    report = httpx.get(f"{live.url}/api/limits", headers=alice).json()
    assert (report["key"], report["user"]) == ("spender", "alice")
    assert report["policy"]["daily_tokens"] == 1_000
    assert report["key_policy"]["daily_tokens"] == DAILY
    assert report["key_policy"]["max_tokens"] == CAP
    spent = 1_000 - report["remaining"]["tokens_today"]
    assert spent > 0 and report["key_remaining"]["tokens_today"] == DAILY - spent
    assert report["nearest_limit"] == "user"  # a smaller share of 1,000 is left than of 100,000


def test_a_rotated_key_voids_the_tokens_it_minted(store_url: str | None) -> None:
    with live_proxy(store_url) as proxy:
        alice = _mint(proxy)
        assert proxy.post(_CHAT, _body_for(_CHAT, {}), alice).status_code == 200
    new_key = "pg_test_canary_key_spender_rotated"
    rotated = key_policy().replace(
        hashlib.sha256(KEY.encode()).hexdigest(), hashlib.sha256(new_key.encode()).hexdigest()
    )
    with live_proxy(store_url, rotated) as proxy:
        refused = proxy.post(_CHAT, _body_for(_CHAT, {}), alice)
        assert refused.status_code == 401 and "rotated" in refused.json()["error"]["message"]
        assert not proxy.state.received


def test_minting_where_tokens_are_off_is_404_not_enabled(store_url: str | None) -> None:
    with live_proxy(store_url, token_secret=None) as proxy:
        answer = proxy.post("/v1/tokens", {"user": "alice"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_enabled"
    assert "TOKEN_SECRET" in answer.json()["error"]["message"]
