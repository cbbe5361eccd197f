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
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
CLASSIFIER = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
GENERATOR = "openai-community/gpt2"
MISSING = "nobody/missing-model"
ALLOWED = ",".join([MODEL, EMBEDDER, CLASSIFIER, GENERATOR, MISSING])


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
        settings = make_settings(hf_base_url=standin_url, allowed_models=ALLOWED)
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


def openai_client(live: Live, key: str = CANARY_KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def test_openai_embeddings_default_base64_decode_to_the_vectors(live: Live) -> None:
    from lib.standin import text_vector

    result = openai_client(live).embeddings.create(model=EMBEDDER, input=["alpha", "beta"])
    assert [item.index for item in result.data] == [0, 1]
    for item, text in zip(result.data, ["alpha", "beta"], strict=True):
        assert item.embedding == pytest.approx(text_vector(text), abs=1e-6)
    assert live.standin.received[-1]["json"] == {"inputs": ["alpha", "beta"]}
    assert live.standin.received[-1]["path"].endswith(f"{EMBEDDER}/pipeline/feature-extraction")


def test_openai_embeddings_float_format(live: Live) -> None:
    from lib.standin import text_vector

    result = openai_client(live).embeddings.create(
        model=EMBEDDER, input="gamma", encoding_format="float"
    )
    assert result.data[0].embedding == text_vector("gamma")
    assert result.model == EMBEDDER and result.usage.prompt_tokens == 1


def test_openai_models_list_shows_tasks(live: Live) -> None:
    models = {m.id: m for m in openai_client(live).models.list()}
    assert set(models) == set(ALLOWED.split(","))
    assert models[MODEL].model_extra["task"] == "chat-completion"
    assert models[EMBEDDER].model_extra["task"] == "feature-extraction"


@pytest.mark.parametrize(
    ("model", "content", "error_name", "status"),
    [
        (MODEL, "x", "AuthenticationError", 401),
        ("meta-llama/Llama-3.1-405B", "x", "PermissionDeniedError", 403),
        (MISSING, "x", "NotFoundError", 404),
        (MODEL, "x #standin:429", "RateLimitError", 429),
        (MODEL, "x #standin:422", "UnprocessableEntityError", 422),
        ("bad..model", "x", "UnprocessableEntityError", 422),
        (MODEL, "x #standin:402", "APIStatusError", 402),
        (MODEL, "x #standin:500", "InternalServerError", 502),
    ],
)
def test_openai_typed_errors(
    live: Live, model: str, content: str, error_name: str, status: int
) -> None:
    import openai

    key = "pg_test_canary_wrong" if error_name == "AuthenticationError" else CANARY_KEY
    with pytest.raises(getattr(openai, error_name)) as caught:
        openai_client(live, key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}]
        )
    assert caught.value.status_code == status
    assert caught.value.message and caught.value.request_id
    assert isinstance(caught.value.body, dict) and caught.value.body["message"]


def test_openai_bad_request_error(live: Live) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(live).embeddings.create(model=EMBEDDER, input="x", dimensions=12)
    assert "384 dimensions" in caught.value.message


def hf_client(live: Live, model: str | None = None, **kwargs):
    from huggingface_hub import InferenceClient

    if model:
        return InferenceClient(model=f"{live.url}/models/{model}", api_key=CANARY_KEY, **kwargs)
    return InferenceClient(base_url=live.url, api_key=CANARY_KEY, **kwargs)


def test_huggingface_hub_feature_extraction(live: Live) -> None:
    from lib.standin import text_vector

    client = hf_client(live, f"{EMBEDDER}/pipeline/feature-extraction")
    vector = client.feature_extraction("delta")
    assert vector.shape == (384,)
    assert vector.tolist() == pytest.approx(text_vector("delta"), abs=1e-6)


def test_huggingface_hub_text_classification(live: Live) -> None:
    result = hf_client(live, CLASSIFIER).text_classification("I love this")
    assert [(r.label, r.score) for r in result] == [("POSITIVE", 0.9), ("NEGATIVE", 0.1)]


def test_huggingface_hub_text_generation(live: Live) -> None:
    text = hf_client(live, GENERATOR).text_generation("Once upon", max_new_tokens=20)
    assert text == "Hello from the stand-in upstream! You said: Once upon"
    sent = live.standin.received[-1]
    assert sent["path"] == f"/hf-inference/models/{GENERATOR}"
    assert sent["json"]["parameters"]["max_new_tokens"] == 20
    assert sent["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}"


def test_huggingface_hub_chat_through_model_url(live: Live) -> None:
    output = hf_client(live, MODEL).chat_completion(
        messages=[{"role": "user", "content": "via model url"}]
    )
    assert output.choices[0].message.content.endswith("You said: via model url")


def test_huggingface_hub_async_client(live: Live) -> None:
    import asyncio

    from huggingface_hub import AsyncInferenceClient

    async def run() -> tuple[str, list[str], list[float]]:
        chat = AsyncInferenceClient(base_url=live.url, api_key=CANARY_KEY)
        output = await chat.chat_completion(messages=[{"role": "user", "content": "async hi"}])
        pieces = [
            chunk.choices[0].delta.content or ""
            async for chunk in await chat.chat_completion(
                messages=[{"role": "user", "content": "async stream"}], stream=True
            )
            if chunk.choices
        ]
        embedder = AsyncInferenceClient(
            model=f"{live.url}/models/{EMBEDDER}/pipeline/feature-extraction", api_key=CANARY_KEY
        )
        vector = await embedder.feature_extraction("epsilon")
        return output.choices[0].message.content, pieces, vector.tolist()

    content, pieces, vector = asyncio.run(run())
    assert content.endswith("You said: async hi")
    assert "".join(pieces).endswith("You said: async stream")
    assert len(vector) == 384


def test_huggingface_hub_typed_errors(live: Live) -> None:
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OverloadedError,
        RepositoryNotFoundError,
        ValidationError,
    )

    with pytest.raises(RepositoryNotFoundError):
        hf_client(live, MISSING).text_classification("x")
    with pytest.raises(HfHubHTTPError, match="not a Hub model id") as caught:
        hf_client(live, "bad..name/x").text_classification("x")
    assert caught.value.response.status_code == 422
    with pytest.raises(ValidationError, match="Streaming is not supported"):
        hf_client(live, GENERATOR).text_generation("x", stream=True)
    with pytest.raises(HfHubHTTPError, match="not allowed") as caught:
        hf_client(live, "facebook/bart-large-cnn").summarization("x")
    assert caught.value.response.status_code == 403
    assert caught.value.request_id
    with pytest.raises(OverloadedError):
        hf_client(live, GENERATOR).text_generation("x #standin:429")


def test_huggingface_hub_saved_token_is_refused_and_never_forwarded(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a token, huggingface_hub sends the user's own saved one (here from HF_TOKEN)."""
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    users_token = "hf_test_canary_users_saved_token_x"
    monkeypatch.setenv("HF_TOKEN", users_token)
    before = len(live.standin.received)
    client = InferenceClient(model=f"{live.url}/models/{CLASSIFIER}")
    with pytest.raises(HfHubHTTPError) as caught:
        client.text_classification("x")
    assert caught.value.response.status_code == 401
    assert "client key" in str(caught.value)
    assert users_token not in str(caught.value)
    assert len(live.standin.received) == before
    assert users_token not in json.dumps(live.standin.received)
