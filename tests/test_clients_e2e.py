"""The official clients, unmodified, against the app under uvicorn and the stand-in upstream."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from lib.app import create_app
from lib.standin import StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN, LogCollector, make_settings
from tests.servers import serve_on_loopback

MODEL = "HuggingFaceTB/SmolLM3-3B"


@dataclass
class Live:
    """The proxy and the stand-in, both serving on loopback."""

    url: str
    standin: StandinState
    log_lines: list[str]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    collector = LogCollector()
    logger = logging.getLogger("promptgate")
    with serve_on_loopback(create_standin_app(state)) as standin_url:
        settings = make_settings(hf_base_url=standin_url)
        app = create_app(settings)
        logger.addHandler(collector)
        try:
            with serve_on_loopback(app) as url:
                yield Live(url, state, collector.lines)
        finally:
            logger.removeHandler(collector)


def test_openai_chat_completion(live: Live) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY, max_retries=0)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "ping from openai"}], max_tokens=50
    )
    assert completion.choices[0].message.content == (
        "Hello from the stand-in upstream! You said: ping from openai"
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 10
    received = live.standin.received[-1]
    assert received["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert CANARY_KEY not in json.dumps(received)
    assert received["json"]["max_tokens"] == 50


def test_openai_streamed_chat_with_usage(live: Live) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the stand-in upstream! You said: stream please"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 9


def test_openai_missing_key_raises_authentication_error(live: Live) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="pg_test_canary_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert "Invalid API key" in caught.value.message
    assert caught.value.request_id


def test_openai_mid_stream_failure_raises(live: Live) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x #standin:cut"}], stream=True
    )
    with pytest.raises(openai.APIError, match="ended before it was complete"):
        list(stream)


def test_huggingface_hub_chat_completion(live: Live) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=live.url, api_key=CANARY_KEY)
    output = client.chat_completion(
        messages=[{"role": "user", "content": "ping from hf"}], max_tokens=40
    )
    assert (
        output.choices[0].message.content
        == "Hello from the stand-in upstream! You said: ping from hf"
    )
    assert live.standin.received[-1]["json"]["model"] == MODEL  # "dummy" became the default


def test_huggingface_hub_streamed_chat(live: Live) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=live.url, api_key=CANARY_KEY)
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat_completion(
            messages=[{"role": "user", "content": "hf stream"}], stream=True
        )
        if chunk.choices
    ]
    assert "".join(pieces) == "Hello from the stand-in upstream! You said: hf stream"
    assert len(pieces) > 5


def test_huggingface_hub_upstream_credit_error_is_raised(live: Live) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client = InferenceClient(base_url=live.url, api_key=CANARY_KEY)
    with pytest.raises(HfHubHTTPError) as caught:
        client.chat_completion(messages=[{"role": "user", "content": "x #standin:402"}])
    assert "credits" in str(caught.value)


def test_streamed_chat_arrives_incrementally_over_http(live: Live) -> None:
    live.standin.token_delay_s = 0.05
    try:
        with httpx.stream(
            "POST",
            f"{live.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "one two"}], "stream": True},
            headers={"Authorization": f"Bearer {CANARY_KEY}"},
        ) as response:
            assert response.headers["x-accel-buffering"] == "no"
            arrivals = [len(chunk) for chunk in response.iter_raw()]
    finally:
        live.standin.token_delay_s = 0.0
    # Each word is its own event, written as the stand-in produces it.
    assert len(arrivals) >= 8


def test_no_secret_in_any_response_or_log_line(live: Live) -> None:
    """Drive success and failure paths, then search every body, header and log line."""
    seen: list[str] = []
    requests = [
        ("GET", "/api/health", None, {}),
        ("GET", "/v1/models", None, {"Authorization": f"Bearer {CANARY_KEY}"}),
        ("GET", "/openapi.json", None, {}),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}]},
            {"Authorization": f"Bearer {CANARY_KEY}"},
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x #standin:401"}]},
            {"Authorization": f"Bearer {CANARY_KEY}"},
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x #standin:500"}], "stream": True},
            {"Authorization": f"Bearer {CANARY_KEY}"},
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x #standin:midError"}], "stream": True},
            {"Authorization": f"Bearer {CANARY_KEY}"},
        ),
        (
            "POST",
            "/api/generate",
            {"prompt": "x #standin:notjson"},
            {"Authorization": f"Bearer {CANARY_KEY}"},
        ),
        (
            "POST",
            "/api/generate",
            {"prompt": "x"},
            {"Authorization": "Bearer pg_test_canary_wrong"},
        ),
        ("POST", "/api/generate", {"prompt": "x"}, {"Authorization": f"Bearer {CANARY_TOKEN}"}),
    ]
    with httpx.Client(base_url=live.url) as client:
        for method, path, body, headers in requests:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code != 500
            seen.append(response.text)
            seen.extend(f"{k}: {v}" for k, v in response.headers.items())
    seen.extend(live.log_lines)
    everything = "\n".join(seen)
    for secret in (CANARY_TOKEN, CANARY_KEY):
        assert secret not in everything
    assert len(live.log_lines) >= len(requests)
