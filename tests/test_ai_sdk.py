"""The Vercel AI SDK (`ai`, `@ai-sdk/openai`, `@ai-sdk/openai-compatible`) against the proxy.

tests/js/ai_sdk_check.mjs runs every scenario once, under Node, against the proxy under
uvicorn and the stand-in upstream; each test checks what one scenario got back and what
the upstream received for it (found by the `[scenario]` that starts its prompt).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lib.standin import StandinState
from tests.ai_sdk import PACKAGE_DIR, run_node_script
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.servers import serve_proxy_and_standin

MODEL = "HuggingFaceTB/SmolLM3-3B"
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
DENIED = "meta-llama/Llama-3.1-405B"
HELLO = "Hello from the stand-in upstream! You said: "


@dataclass
class Run:
    """What the node script reported, and what the stand-in received meanwhile."""

    results: dict[str, Any]
    received: list[dict[str, Any]]

    def sent_for(self, scenario: str) -> list[dict[str, Any]]:
        """The upstream requests whose prompt starts with `[scenario]`."""
        return [r for r in self.received if f"[{scenario}]" in json.dumps(r["json"])]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    state = StandinState(token=CANARY_TOKEN)
    with serve_proxy_and_standin(state, allowed_models=f"{MODEL},{EMBEDDER}") as url:
        done = run_node_script(
            (PACKAGE_DIR / "ai_sdk_check.mjs").read_text(),
            "ai_sdk_check.mjs",
            {
                "PROMPTGATE_URL": url,
                "PROMPTGATE_KEY": CANARY_KEY,
                "PROMPTGATE_BAD_KEY": "pg_test_canary_wrong_key",
                "CHAT_MODEL": MODEL,
                "EMBEDDING_MODEL": EMBEDDER,
                "DENIED_MODEL": DENIED,
            },
        )
    assert done.returncode == 0, done.stderr[-3000:]
    yield Run(json.loads(done.stdout), list(state.received))


def result(run: Run, scenario: str) -> dict[str, Any]:
    outcome = run.results[scenario]
    assert outcome["ok"], outcome
    return outcome


def only_request(run: Run, scenario: str, path: str) -> dict[str, Any]:
    sent = run.sent_for(scenario)
    assert [r["path"] for r in sent] == [path]
    assert sent[0]["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}"
    return sent[0]["json"]


def test_generate_text_on_the_responses_api(run: Run) -> None:
    got = result(run, "responses_generateText")
    assert got["text"] == HELLO + "[responses_generateText] hello"
    assert got["usage"]["outputTokens"] == 9 and got["finishReason"] == "stop"
    sent = only_request(run, "responses_generateText", "/v1/responses")
    assert sent["model"] == MODEL and sent["store"] is False
    assert sent["input"][0]["content"][0]["type"] == "input_text"


def test_stream_text_on_the_responses_api(run: Run) -> None:
    got = result(run, "responses_streamText")
    assert got["text"] == HELLO + "[responses_streamText] hello"
    assert got["parts"] > 5 and got["usage"]["totalTokens"] == 11
    assert got["finishReason"] == "stop"
    assert only_request(run, "responses_streamText", "/v1/responses")["stream"] is True


def test_tool_loop_on_the_responses_api(run: Run) -> None:
    got = result(run, "responses_toolLoop")
    assert got["steps"] == 2
    assert got["toolCalls"] == [{"name": "getWeather", "input": {"city": "stand-in"}}]
    assert got["toolResults"] == ["sunny in stand-in"]
    assert got["text"].startswith(HELLO)
    first, second = run.sent_for("responses_toolLoop")
    assert first["json"]["tools"][0]["name"] == "getWeather"
    outputs = [i for i in second["json"]["input"] if i.get("type") == "function_call_output"]
    assert len(outputs) == 1 and "sunny in stand-in" in json.dumps(outputs[0])


def test_generate_object_on_the_responses_api(run: Run) -> None:
    got = result(run, "responses_generateObject")
    assert got["object"] == {"name": "stand-in", "age": 1, "tags": ["stand-in"]}
    sent = only_request(run, "responses_generateObject", "/v1/responses")
    assert sent["text"]["format"]["type"] == "json_schema"
    assert set(sent["text"]["format"]["schema"]["properties"]) == {"name", "age", "tags"}


@pytest.mark.parametrize("provider", ["chat", "compatible"])
def test_generate_and_stream_text_on_chat_completions(run: Run, provider: str) -> None:
    got = result(run, f"{provider}_generateText")
    assert got["text"] == HELLO + f"[{provider}_generateText] hello"
    assert got["usage"]["totalTokens"] == 11
    streamed = result(run, f"{provider}_streamText")
    assert streamed["text"] == HELLO + f"[{provider}_streamText] hello"
    assert streamed["usage"]["totalTokens"] == 11 and streamed["parts"] > 5
    sent = only_request(run, f"{provider}_streamText", "/v1/chat/completions")
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_embed_many(run: Run) -> None:
    from lib.standin import text_vector

    got = result(run, "embedMany")
    assert got["count"] == 3 and got["dimensions"] == [384] * 3
    assert got["first"] == pytest.approx(text_vector("[embedMany] one")[:3], abs=1e-6)
    sent = run.sent_for("embedMany")
    assert [r["path"] for r in sent] == [
        f"/hf-inference/models/{EMBEDDER}/pipeline/feature-extraction"
    ]
    assert sent[0]["json"] == {"inputs": ["[embedMany] one", "two", "three"]}


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("responses_broken_stream", "The upstream failed mid-stream: CUDA out of memory"),
        ("chat_broken_stream", "The upstream stream ended before it was complete."),
    ],
)
def test_broken_stream_reaches_on_error_and_finishes_as_error(
    run: Run, scenario: str, message: str
) -> None:
    got = result(run, scenario)
    assert got["text"] == "Hello from"  # what came before the break, nothing invented after
    assert [error["message"] for error in got["errors"]] == [message]
    assert got["finishReason"] == "error"
    if scenario.startswith("responses"):
        # Read from the Responses error event's `code` (`upstream_error`: no HTTP status in it).
        assert got["errors"][0]["statusCode"] == 500


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("error_401_responses", 401),
        ("error_401_chat", 401),
        ("error_403_responses", 403),
        ("error_403_chat", 403),
        ("error_429_responses", 429),
        ("error_429_chat", 429),
        ("error_429_compatible", 429),
    ],
)
def test_typed_errors_are_api_call_errors_with_the_status(
    run: Run, scenario: str, status: int
) -> None:
    outcome = run.results[scenario]
    assert not outcome["ok"]
    assert outcome["error"]["isAPICallError"] and outcome["error"]["statusCode"] == status
    assert json.loads(outcome["responseBody"])["error"]["message"] == outcome["error"]["message"]


@pytest.fixture(scope="module")
def cached_run() -> Iterator[Run]:
    state = StandinState(token=CANARY_TOKEN)
    with serve_proxy_and_standin(state, cache_ttl_s=600) as url:
        done = run_node_script(
            (PACKAGE_DIR / "ai_sdk_cache_check.mjs").read_text(),
            "ai_sdk_cache_check.mjs",
            {"PROMPTGATE_URL": url, "PROMPTGATE_KEY": CANARY_KEY, "CHAT_MODEL": MODEL},
        )
    assert done.returncode == 0, done.stderr[-3000:]
    yield Run(json.loads(done.stdout), list(state.received))


@pytest.mark.parametrize(
    "scenario", ["responses_streamText", "chat_streamText", "compatible_streamText"]
)
def test_a_stream_replayed_from_the_cache_reads_as_the_one_relayed(
    cached_run: Run, scenario: str
) -> None:
    got = result(cached_run, scenario)
    assert got["cache"] == ["miss", "hit"]
    first, second = got["first"], got["second"]
    assert first["text"] == HELLO + f"[cache {scenario}] hello"
    assert second["text"] == first["text"] and second["finishReason"] == "stop"
    assert second["usage"]["outputTokens"] == first["usage"]["outputTokens"] > 0
    assert second["usage"]["inputTokens"] == first["usage"]["inputTokens"]
    assert len(cached_run.sent_for(f"cache {scenario}")) == 1
