"""LangChain's `ChatOpenAI` and `OpenAIEmbeddings` against the proxy and the stand-in upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from lib.standin import StandinState, text_vector
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.servers import serve_proxy_and_standin

MODEL = "HuggingFaceTB/SmolLM3-3B"
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
HELLO = "Hello from the stand-in upstream! You said: "


@dataclass
class Live:
    """The proxy and the stand-in, both serving on loopback."""

    url: str
    standin: StandinState

    def chat(self, key: str = CANARY_KEY, model: str = MODEL, **options):
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model, base_url=f"{self.url}/v1", api_key=key, max_retries=0, **options
        )

    @property
    def sent(self) -> dict:
        return self.standin.received[-1]["json"]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    with serve_proxy_and_standin(state, allowed_models=f"{MODEL},{EMBEDDER}") as url:
        yield Live(url, state)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    """A person, as structured output."""

    name: str
    age: int


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_invoke(live: Live, use_responses_api: bool) -> None:
    message = live.chat(use_responses_api=use_responses_api).invoke("hello langchain")
    assert message.text == HELLO + "hello langchain"
    assert message.usage_metadata["total_tokens"] == 11
    path = live.standin.received[-1]["path"]
    assert path == ("/v1/responses" if use_responses_api else "/v1/chat/completions")


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_stream(live: Live, use_responses_api: bool) -> None:
    llm = live.chat(use_responses_api=use_responses_api, stream_usage=True)
    chunks = list(llm.stream("stream langchain"))
    assert "".join(chunk.text for chunk in chunks) == HELLO + "stream langchain"
    assert len(chunks) > 5
    total = sum((chunk.usage_metadata or {}).get("total_tokens", 0) for chunk in chunks)
    assert total == 11
    assert live.sent["stream"] is True


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_bind_tools_round_trip(live: Live, use_responses_api: bool) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = live.chat(use_responses_api=use_responses_api).bind_tools([get_weather])
    question = HumanMessage("weather in Paris?")
    asked = llm.invoke([question])
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [
        ("get_weather", {"city": "stand-in"})
    ]
    tools = live.sent["tools"]
    name = tools[0]["name"] if use_responses_api else tools[0]["function"]["name"]
    assert name == "get_weather"
    call = asked.tool_calls[0]
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    answer = llm.invoke([question, asked, result])
    assert answer.text.startswith(HELLO) and not answer.tool_calls
    assert "sunny in stand-in" in json.dumps(live.sent)


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_with_structured_output(live: Live, use_responses_api: bool) -> None:
    llm = live.chat(use_responses_api=use_responses_api).with_structured_output(Person)
    assert llm.invoke("a person") == Person(name="stand-in", age=1)
    sent = live.sent
    schema = (
        sent["text"]["format"]["schema"]
        if use_responses_api
        else sent["response_format"]["json_schema"]["schema"]
    )
    assert set(schema["properties"]) == {"name", "age"}


def test_embeddings(live: Live) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=EMBEDDER,
        base_url=f"{live.url}/v1",
        api_key=CANARY_KEY,
        check_embedding_ctx_length=False,  # else LangChain sends token ids, not texts
        max_retries=0,
    )
    vectors = embeddings.embed_documents(["alpha", "beta"])
    assert vectors == [pytest.approx(text_vector(t), abs=1e-6) for t in ("alpha", "beta")]
    assert live.sent == {"inputs": ["alpha", "beta"]}
    assert embeddings.embed_query("gamma") == pytest.approx(text_vector("gamma"), abs=1e-6)


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_typed_errors(live: Live, use_responses_api: bool) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError):
        live.chat("pg_test_canary_wrong", use_responses_api=use_responses_api).invoke("x")
    with pytest.raises(openai.PermissionDeniedError):
        live.chat(use_responses_api=use_responses_api, model="meta-llama/Llama-3.1-405B").invoke(
            "x"
        )
    with pytest.raises(openai.RateLimitError):
        live.chat(use_responses_api=use_responses_api).invoke("x #standin:429")


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_broken_stream_raises(live: Live, use_responses_api: bool) -> None:
    import openai

    llm = live.chat(use_responses_api=use_responses_api)
    with pytest.raises(openai.APIError, match="ended before it was complete"):
        list(llm.stream("x #standin:cut"))
