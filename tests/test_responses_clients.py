"""The openai SDK's Responses API against the proxy under uvicorn and the stand-in upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from lib.standin import Fault, StandinState
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.servers import serve_proxy_and_standin

MODEL = "HuggingFaceTB/SmolLM3-3B"
IDLE_S = 1.0
DEADLINE_S = 5.0
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}


@dataclass
class Live:
    """The proxy and the stand-in, both serving on loopback."""

    url: str
    standin: StandinState

    def client(self, key: str = CANARY_KEY):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    with serve_proxy_and_standin(
        state, allowed_models=MODEL, request_timeout_s=DEADLINE_S, stream_idle_timeout_s=IDLE_S
    ) as url:
        yield Live(url, state)


def test_openai_responses_create(live: Live) -> None:
    response = live.client().responses.create(
        model=MODEL, input="ping from responses", max_output_tokens=50, temperature=0
    )
    assert response.output_text == "Hello from the stand-in upstream! You said: ping from responses"
    assert response.status == "completed"
    assert response.usage is not None and response.usage.output_tokens == 10
    received = live.standin.received[-1]
    assert received["path"] == "/v1/responses"
    assert received["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert CANARY_KEY not in json.dumps(received)
    assert received["json"]["store"] is False and received["json"]["max_output_tokens"] == 50


def test_openai_responses_streamed_events(live: Live) -> None:
    events = list(live.client().responses.create(model=MODEL, input="stream me", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello from the stand-in upstream! You said: stream me"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.usage.total_tokens > 0


def test_openai_responses_stream_helper_gives_the_final_response(live: Live) -> None:
    with live.client().responses.stream(model=MODEL, input="helper") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert (
        "".join(texts)
        == final.output_text
        == ("Hello from the stand-in upstream! You said: helper")
    )


def test_openai_responses_stop_at_max_output_tokens_as_incomplete(live: Live) -> None:
    events = list(
        live.client().responses.create(model=MODEL, input="x", max_output_tokens=3, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_openai_async_responses(live: Live) -> None:
    from openai import AsyncOpenAI

    async def run() -> tuple[str, str]:
        client = AsyncOpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY, max_retries=0)
        plain = await client.responses.create(model=MODEL, input="async plain")
        pieces = [
            event.delta
            async for event in await client.responses.create(
                model=MODEL, input="async stream", stream=True
            )
            if event.type == "response.output_text.delta"
        ]
        await client.close()
        return plain.output_text, "".join(pieces)

    plain, streamed = asyncio.run(run())
    assert plain.endswith("You said: async plain")
    assert streamed.endswith("You said: async stream")


def test_openai_responses_function_call_round_trip(live: Live) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    client = live.client()
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=tools)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "stand-in"}
    follow_up = [
        {"role": "user", "content": "Weather in Paris?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = client.responses.create(model=MODEL, input=follow_up, tools=tools)
    assert second.output_text.startswith("Hello from the stand-in upstream!")
    assert live.standin.received[-1]["json"]["input"][2]["output"] == "sunny"


@pytest.mark.parametrize(
    ("model", "text", "key", "error_name", "status"),
    [
        (MODEL, "x", "pg_test_canary_wrong", "AuthenticationError", 401),
        ("meta-llama/Llama-3.1-405B", "x", CANARY_KEY, "PermissionDeniedError", 403),
        (MODEL, "x #standin:429", CANARY_KEY, "RateLimitError", 429),
    ],
)
def test_openai_responses_typed_errors(
    live: Live, model: str, text: str, key: str, error_name: str, status: int
) -> None:
    import openai

    for stream in (False, True):
        with pytest.raises(getattr(openai, error_name)) as caught:
            live.client(key).responses.create(model=model, input=text, stream=stream)
        assert caught.value.status_code == status
        assert caught.value.request_id and caught.value.message


def test_openai_responses_refusals_for_stored_responses(live: Live) -> None:
    import openai

    client = live.client()
    with pytest.raises(openai.NotFoundError, match="keeps no responses") as caught:
        client.responses.retrieve("resp_abc")
    assert caught.value.code == "not_stored"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_abc")
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_abc")
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_abc")
    with pytest.raises(openai.BadRequestError, match="'store: true' is not supported"):
        client.responses.create(model=MODEL, input="x", store=True)


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("cut", "ended before it was complete"),
        ("midError", "failed mid-stream: CUDA out of memory"),
        ("reset", "connection broke mid-stream"),
    ],
)
def test_openai_responses_broken_stream_raises(live: Live, tag: str, message: str) -> None:
    import openai

    stream = live.client().responses.create(model=MODEL, input=f"x #standin:{tag}", stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match=message):
        seen.extend(event.type for event in stream)
    assert "response.output_text.delta" in seen and "response.completed" not in seen


def test_openai_responses_stream_helper_raises_on_a_broken_stream(live: Live) -> None:
    import openai

    manager = live.client().responses.stream(model=MODEL, input="x #standin:cut")
    with pytest.raises(openai.APIError, match="ended before it was complete"), manager as stream:
        stream.get_final_response()


def test_stream_silent_beyond_the_idle_limit_ends_with_a_timeout_error_event(live: Live) -> None:
    live.standin.faults[:] = [Fault(chunk_delay_s=IDLE_S + 1)]
    response = httpx.post(
        f"{live.url}/v1/responses", json={"input": "x", "stream": True}, headers=AUTH, timeout=10
    )
    blocks = [block for block in response.text.split("\n\n") if block]
    assert blocks[-1].startswith("event: error\n")
    error = json.loads(blocks[-1].split("data: ", 1)[1])
    assert error["code"] == "upstream_timeout" and error["error"]["type"] == "timeout_error"
    assert error["sequence_number"] == len(blocks) - 1


def test_stream_longer_than_the_deadline_ends_with_a_timeout_error_event(live: Live) -> None:
    live.standin.faults[:] = [Fault(chunk_delay_s=0.4)]
    started = time.monotonic()
    body = {"input": "word " * 20, "stream": True}  # 30 events, 12 s at 0.4 s each
    response = httpx.post(f"{live.url}/v1/responses", json=body, headers=AUTH, timeout=30)
    took = time.monotonic() - started
    blocks = [block for block in response.text.split("\n\n") if block]
    assert any("response.output_text.delta" in block for block in blocks)  # it did stream
    error = json.loads(blocks[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["code"] == "upstream_timeout"
    assert took < DEADLINE_S + 3


def test_caller_hanging_up_mid_stream_closes_the_upstream_at_once(live: Live) -> None:
    live.standin.faults[:] = [Fault(chunk_delay_s=0.1)]
    ends_before = len(live.standin.stream_ends)
    body = {"input": "word " * 20, "stream": True}  # 30 events, 3 s at 0.1 s each
    with httpx.stream("POST", f"{live.url}/v1/responses", json=body, headers=AUTH) as response:
        assert next(response.iter_lines()).startswith("event: response.created")
        hung_up_at = time.monotonic()
    deadline = hung_up_at + 2.0
    while len(live.standin.stream_ends) == ends_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(live.standin.stream_ends) > ends_before, "upstream stream still open after 2 s"
    assert not live.standin.stream_ends[-1].completed


def test_caller_hanging_up_while_waiting_closes_the_upstream_at_once(live: Live) -> None:
    live.standin.faults[:] = [Fault(delay_s=10)]
    hangups_before = len(live.standin.hangups)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/v1/responses", json={"input": "x"}, headers=AUTH, timeout=0.5)
    gave_up_at = time.monotonic()
    while len(live.standin.hangups) == hangups_before and time.monotonic() < gave_up_at + 2:
        time.sleep(0.02)
    assert len(live.standin.hangups) > hangups_before, "upstream still waited on after 2 s"


def test_openai_responses_parse_gives_the_structured_output(live: Live) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    parsed = live.client().responses.parse(model=MODEL, input="a person", text_format=Person)
    assert parsed.output_parsed == Person(name="stand-in", age=1)
    text_format = live.standin.received[-1]["json"]["text"]["format"]
    assert text_format["type"] == "json_schema" and text_format["strict"] is True


def test_streamed_response_arrives_incrementally_over_http(live: Live) -> None:
    live.standin.faults[:] = [Fault(chunk_delay_s=0.05)]
    body = {"input": "one two", "stream": True}
    with httpx.stream("POST", f"{live.url}/v1/responses", json=body, headers=AUTH) as response:
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["content-type"].startswith("text/event-stream")
        arrivals = [len(chunk) for chunk in response.iter_raw()]
    # Each word is its own event, written as the stand-in produces it.
    assert len(arrivals) >= 8
