"""Retries happen in one place: what the proxy's answer tells a client about retrying it.

After the proxy's own attempts the answer carries `x-should-retry: false` (read by the openai
SDKs); when the proxy could not wait (the deadline) or does not retry, it leaves the client
free to, with the upstream's `Retry-After`. The official clients then make exactly
UPSTREAM_MAX_ATTEMPTS upstream calls for one request, not 3 x 3.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import respx

from lib.app import create_app
from lib.http import LOGGER_NAME
from lib.standin import Fault, StandinState, create_standin_app
from tests.conftest import AUTH, CANARY_KEY, CANARY_TOKEN, LogCollector, make_client, make_settings
from tests.servers import serve_on_loopback

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}
MODEL = "HuggingFaceTB/SmolLM3-3B"
CLASSIFIER = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def post_chat(upstream: respx.Router, **settings) -> httpx.Response:
    with make_client(upstream, **settings) as client:
        return client.post(CHAT, json=HELLO, headers=AUTH)


def test_spent_retries_tell_the_client_not_to_repeat_them(upstream: respx.Router) -> None:
    route = upstream.post(CHAT).respond(429, headers={"Retry-After": "0"}, json={"error": "busy"})
    response = post_chat(upstream, upstream_max_attempts=3)
    assert route.call_count == 3
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["retry-after"] == "0"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_spent_retries_on_a_failing_upstream_say_the_same(
    upstream: respx.Router, status: int
) -> None:
    route = upstream.post(CHAT).respond(status, headers={"Retry-After": "0"}, json={"error": "x"})
    response = post_chat(upstream, upstream_max_attempts=2)
    assert route.call_count == 2
    assert response.status_code in (502, 504)
    assert response.headers["x-should-retry"] == "false"


def test_a_wait_that_does_not_fit_the_deadline_is_left_to_the_client(
    upstream: respx.Router,
) -> None:
    route = upstream.post(CHAT).respond(429, headers={"Retry-After": "30"}, json={"error": "x"})
    response = post_chat(upstream, upstream_max_attempts=3, request_timeout_s=10)
    assert route.call_count == 1
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert "x-should-retry" not in response.headers


def test_a_loading_model_s_estimated_time_becomes_retry_after(upstream: respx.Router) -> None:
    loading = {"error": "Model is currently loading", "estimated_time": 20.4}
    upstream.post(CHAT).respond(503, json=loading)
    response = post_chat(upstream, upstream_max_attempts=3, request_timeout_s=10)
    assert response.status_code == 502
    assert response.headers["retry-after"] == "21"
    assert "x-should-retry" not in response.headers


def test_with_retries_off_the_client_does_the_retrying(upstream: respx.Router) -> None:
    route = upstream.post(CHAT).respond(429, headers={"Retry-After": "2"}, json={"error": "x"})
    response = post_chat(upstream, upstream_max_attempts=1)
    assert route.call_count == 1
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert "x-should-retry" not in response.headers


def test_connect_errors_after_the_proxy_s_attempts(upstream: respx.Router) -> None:
    route = upstream.post(CHAT).mock(side_effect=httpx.ConnectError("refused"))
    response = post_chat(upstream, upstream_max_attempts=2)
    assert route.call_count == 2
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("status", [401, 500])
def test_failures_a_retry_cannot_fix_say_so(upstream: respx.Router, status: int) -> None:
    route = upstream.post(CHAT).respond(status, json={"error": "no"})
    response = post_chat(upstream, upstream_max_attempts=3)
    assert route.call_count == 1
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"


def test_the_caller_s_own_mistakes_carry_no_retry_advice(upstream: respx.Router) -> None:
    with make_client(upstream) as client:
        invalid = client.post(CHAT, json={"messages": []}, headers=AUTH)
        unauthorized = client.post(CHAT, json=HELLO)
    assert invalid.status_code == 422 and unauthorized.status_code == 401
    assert "x-should-retry" not in invalid.headers
    assert "x-should-retry" not in unauthorized.headers
    assert not upstream.calls


def test_retries_off_setting_still_says_no_to_a_refused_token(upstream: respx.Router) -> None:
    upstream.post(CHAT).respond(401, json={"error": "Invalid credentials"})
    response = post_chat(upstream, upstream_max_attempts=1)
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"


# The official clients, over real sockets, against the stand-in answering 429 every time.


@dataclass
class Live:
    """A stand-in upstream and two proxies in front of it, on loopback."""

    standin: StandinState
    url: str  # UPSTREAM_MAX_ATTEMPTS=3, the default deadline
    short_url: str  # a 1.5 s deadline: a 1 s Retry-After does not fit
    log_lines: list[str]

    def always(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.standin.faults[:] = [Fault(status=status, headers=headers or {})] * 50
        self.standin.received.clear()
        self.log_lines.clear()

    def upstream_calls(self) -> int:
        return len(self.standin.received)

    def client_requests(self, route: str, expected: int) -> int:
        """Requests the proxy logged for `route`, waiting a little for `expected` of them
        (a request's log line is written once its answer has gone out)."""
        deadline = time.monotonic() + 5
        while True:
            count = sum(1 for line in self.log_lines if json.loads(line).get("route") == route)
            if count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(0.02)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    collector = LogCollector()
    logger = logging.getLogger(LOGGER_NAME)
    allowed = ",".join([MODEL, CLASSIFIER, EMBEDDER])
    with serve_on_loopback(create_standin_app(state)) as standin_url:
        common = {"hf_base_url": standin_url, "allowed_models": allowed}
        app = create_app(make_settings(upstream_max_attempts=3, **common))
        short = create_app(make_settings(upstream_max_attempts=3, request_timeout_s=1.5, **common))
        logger.addHandler(collector)
        try:
            with serve_on_loopback(app) as url, serve_on_loopback(short) as short_url:
                yield Live(state, url, short_url, collector.lines)
        finally:
            logger.removeHandler(collector)
            state.faults.clear()


def test_openai_sdk_with_its_default_retries_makes_three_upstream_calls(live: Live) -> None:
    import openai

    live.always(429)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY)  # max_retries=2
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO["messages"])
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert live.upstream_calls() == 3
    assert live.client_requests(CHAT, 1) == 1


def test_openai_sdk_embeddings_make_three_upstream_calls(live: Live) -> None:
    import openai

    live.always(502)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model=EMBEDDER, input=["a", "b"])
    assert live.upstream_calls() == 3
    assert live.client_requests("/v1/embeddings", 1) == 1


def test_openai_sdk_waits_the_retry_after_the_proxy_could_not(live: Live) -> None:
    """The proxy cannot wait 1 s within 1.5 s: it answers at once and the client waits."""
    import openai

    live.always(429, {"Retry-After": "1"})
    client = openai.OpenAI(base_url=f"{live.short_url}/v1", api_key=CANARY_KEY, max_retries=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO["messages"])
    assert "x-should-retry" not in caught.value.response.headers
    assert caught.value.response.headers["retry-after"] == "1"
    assert live.client_requests(CHAT, 3) == 3
    assert live.upstream_calls() == 3  # one per client request: still not 9


@pytest.mark.parametrize("task", ["chat", "text_classification"])
def test_huggingface_hub_makes_three_upstream_calls(live: Live, task: str) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    live.always(429)
    if task == "chat":
        client = InferenceClient(base_url=live.url, api_key=CANARY_KEY)
        with pytest.raises(HfHubHTTPError) as caught:
            client.chat_completion(messages=HELLO["messages"])
    else:
        client = InferenceClient(model=f"{live.url}/models/{CLASSIFIER}", api_key=CANARY_KEY)
        with pytest.raises(HfHubHTTPError) as caught:
            client.text_classification("x")
    assert caught.value.response.status_code == 429
    assert live.upstream_calls() == 3


def test_openai_sdk_on_an_unreachable_upstream_makes_one_request() -> None:
    import openai

    collector = LogCollector()
    logger = logging.getLogger(LOGGER_NAME)
    # A port that was just free: nothing listens there.
    with serve_on_loopback(create_standin_app()) as gone:
        pass
    app = create_app(make_settings(hf_base_url=gone, upstream_max_attempts=3))
    logger.addHandler(collector)
    try:
        with serve_on_loopback(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=CANARY_KEY)
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model=MODEL, messages=HELLO["messages"])
    finally:
        logger.removeHandler(collector)
    assert caught.value.status_code == 502
    deadline = time.monotonic() + 5
    while not collector.lines and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = [json.loads(line) for line in collector.lines]
    assert [(line["route"], line["attempts"]) for line in lines] == [(CHAT, 3)]
