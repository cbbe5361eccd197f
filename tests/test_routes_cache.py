"""The response cache through the app: hit, miss and bypass on chat (plain and streamed),
`/api/generate` and embeddings, on the in-process store and on a real Redis, in front of
the stand-in upstream on loopback; replayed streams read by the official openai client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lib.app import create_app
from lib.standin import Fault, StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN, make_settings, sha256_hex
from tests.redis_server import run_redis_server
from tests.secret_audit import audited
from tests.servers import serve_on_loopback

CHAT = "/v1/chat/completions"
GENERATE = "/api/generate"
EMBED = "/v1/embeddings"
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
OTHER_KEY = "pg_test_canary_cache_other"
SHARED_A = "pg_test_canary_cache_shared_a"
SHARED_B = "pg_test_canary_cache_shared_b"
SAMPLED_KEY = "pg_test_canary_cache_sampled"
OFF_KEY = "pg_test_canary_cache_off"
ADMIN_KEY = "pg_test_canary_cache_admin"
TOKEN_SECRET = "pg_test_canary_token_secret_0123456789abcdef"
HEADER = "x-promptgate-cache"
ASK = {"messages": [{"role": "user", "content": "What is a cache?"}], "temperature": 0}

POLICY = f"""
[defaults]
cache_ttl_s = 600

[keys.app]
sha256 = "{sha256_hex(CANARY_KEY)}"
rpm = 1000
tpm = 100000

[keys.other]
sha256 = "{sha256_hex(OTHER_KEY)}"

[keys.shared-a]
sha256 = "{sha256_hex(SHARED_A)}"
cache_scope = "deployment"

[keys.shared-b]
sha256 = "{sha256_hex(SHARED_B)}"
cache_scope = "deployment"

[keys.sampled]
sha256 = "{sha256_hex(SAMPLED_KEY)}"
cache_nondeterministic = true

[keys.off]
sha256 = "{sha256_hex(OFF_KEY)}"
cache_ttl_s = 0

[admins.ops]
sha256 = "{sha256_hex(ADMIN_KEY)}"
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[StandinState, str]]:
    state = StandinState(token=CANARY_TOKEN)
    with serve_on_loopback(create_standin_app(state), log_level="critical") as url:
        yield state, url


@pytest.fixture
def state(standin: tuple[StandinState, str]) -> StandinState:
    standin[0].received.clear()
    standin[0].faults.clear()
    standin[0].model_faults.clear()
    return standin[0]


def cache_app(standin_url: str, store_url: str | None, **settings: Any) -> Any:
    values: dict[str, Any] = {
        "hf_base_url": standin_url,
        "keys_toml": POLICY,
        "redis_url": store_url,
        "token_secret": TOKEN_SECRET,
        "limits_store_timeout_s": 2.0,
        **settings,
    }
    return create_app(make_settings(**values))


@pytest.fixture
def client(
    standin: tuple[StandinState, str], state: StandinState, store_url: str | None
) -> Iterator[TestClient]:
    with TestClient(audited(cache_app(standin[1], store_url))) as test_client:
        yield test_client


def calls(state: StandinState, path: str = CHAT) -> int:
    return sum(1 for seen in state.received if seen["path"] == path)


def completion(content: str, finish_reason: str = "stop") -> bytes:
    """A chat completion the stand-in is scripted to answer instead of its own."""
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason}
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return json.dumps(
        {
            "id": "chatcmpl-f",
            "object": "chat.completion",
            "created": 1,
            "model": "HuggingFaceTB/SmolLM3-3B",
            "choices": [choice],
            "usage": usage,
        }
    ).encode()


def test_a_repeated_chat_request_is_answered_from_the_cache(
    client: TestClient, state: StandinState
) -> None:
    first = client.post(CHAT, json=ASK, headers=AUTH)
    second = client.post(CHAT, json=ASK, headers=AUTH)
    assert first.status_code == second.status_code == 200
    assert first.headers[HEADER] == "miss" and "age" not in first.headers
    assert second.headers[HEADER] == "hit" and int(second.headers["age"]) >= 0
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"] == first.json()["usage"]
    assert calls(state) == 1


def test_fields_that_do_not_change_the_answer_share_the_entry(
    client: TestClient, state: StandinState
) -> None:
    client.post(CHAT, json=ASK, headers=AUTH)
    reordered = {"temperature": 0, "user": "someone", "metadata": {"a": "b"}, **ASK}
    assert client.post(CHAT, json=reordered, headers=AUTH).headers[HEADER] == "hit"
    other_prompt = {**ASK, "messages": [{"role": "user", "content": "Something else?"}]}
    assert client.post(CHAT, json=other_prompt, headers=AUTH).headers[HEADER] == "miss"
    assert client.post(CHAT, json={**ASK, "max_tokens": 7}, headers=AUTH).headers[HEADER] == (
        "miss"
    )
    assert calls(state) == 3


def test_a_plain_answer_replays_as_a_stream_the_openai_client_reads(
    client: TestClient, state: StandinState
) -> None:
    from openai import OpenAI

    plain = client.post(CHAT, json=ASK, headers=AUTH).json()
    sdk = OpenAI(base_url="http://testserver/v1", api_key=CANARY_KEY, http_client=client)
    raw = sdk.chat.completions.with_raw_response.create(
        model="HuggingFaceTB/SmolLM3-3B",
        messages=ASK["messages"],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers[HEADER] == "hit"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain["choices"][0]["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == plain["usage"]["total_tokens"]
    assert all(c.object == "chat.completion.chunk" and c.id == plain["id"] for c in chunks)
    # Without include_usage, no usage chunk, as the relay does.
    again = client.post(CHAT, json={**ASK, "stream": True}, headers=AUTH)
    assert again.headers["content-type"].startswith("text/event-stream")
    assert b'"usage"' not in again.content and again.content.endswith(b"data: [DONE]\n\n")
    assert calls(state) == 1


def test_a_streamed_answer_is_kept_once_complete_and_serves_a_plain_request(
    client: TestClient, state: StandinState
) -> None:
    from openai import OpenAI

    sdk = OpenAI(base_url="http://testserver/v1", api_key=CANARY_KEY, http_client=client)
    streamed = list(
        sdk.chat.completions.create(
            model="HuggingFaceTB/SmolLM3-3B", messages=ASK["messages"], temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    plain = client.post(CHAT, json=ASK, headers=AUTH)
    assert plain.headers[HEADER] == "hit"
    assert plain.json()["choices"][0]["message"]["content"] == text
    assert plain.json()["choices"][0]["finish_reason"] == "stop"
    assert plain.json()["usage"]["completion_tokens"] > 0
    assert calls(state) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(cut_after=2),
        Fault(error_after=2),
        Fault(status=503),
    ],
    ids=["cut", "error-event", "upstream-503"],
)
def test_cut_failed_and_refused_answers_are_never_kept(
    client: TestClient, state: StandinState, fault: Fault
) -> None:
    state.faults[:] = [fault]
    client.post(CHAT, json={**ASK, "stream": True}, headers=AUTH)
    after = client.post(CHAT, json=ASK, headers=AUTH)
    assert after.status_code == 200 and after.headers[HEADER] == "miss"
    assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "hit"


def test_an_answer_ending_otherwise_than_stop_length_or_tool_calls_is_not_kept(
    client: TestClient, state: StandinState
) -> None:
    state.faults[:] = [Fault(status=200, body=completion("", finish_reason="x"))]
    assert client.post(CHAT, json=ASK, headers=AUTH).json()["choices"][0]["finish_reason"] == "x"
    assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "miss"


def test_cache_control_no_cache_skips_the_read_and_no_store_the_write(
    client: TestClient, state: StandinState
) -> None:
    no_store = client.post(CHAT, json=ASK, headers={**AUTH, "Cache-Control": "no-store"})
    assert no_store.headers[HEADER] == "miss"
    assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "miss"  # kept now
    assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "hit"
    fresh = client.post(CHAT, json=ASK, headers={**AUTH, "Cache-Control": "no-cache"})
    assert fresh.headers[HEADER] == "bypass" and "age" not in fresh.headers
    assert calls(state) == 3


def test_sampled_requests_are_cached_only_with_a_seed_or_when_the_policy_says_so(
    client: TestClient, state: StandinState
) -> None:
    sampled = {"messages": ASK["messages"], "temperature": 0.7}
    for _ in range(2):
        assert client.post(CHAT, json=sampled, headers=AUTH).headers[HEADER] == "bypass"
    no_temperature = {"messages": ASK["messages"]}  # the server's default: 1
    assert client.post(CHAT, json=no_temperature, headers=AUTH).headers[HEADER] == "bypass"
    seeded = {**sampled, "seed": 7}
    assert client.post(CHAT, json=seeded, headers=AUTH).headers[HEADER] == "miss"
    assert client.post(CHAT, json=seeded, headers=AUTH).headers[HEADER] == "hit"
    assert client.post(CHAT, json=sampled, headers=bearer(SAMPLED_KEY)).headers[HEADER] == "miss"
    assert client.post(CHAT, json=sampled, headers=bearer(SAMPLED_KEY)).headers[HEADER] == "hit"


def test_one_key_never_sees_another_s_answers_unless_both_share_the_deployment_s(
    client: TestClient, state: StandinState
) -> None:
    assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "miss"
    assert client.post(CHAT, json=ASK, headers=bearer(OTHER_KEY)).headers[HEADER] == "miss"
    assert client.post(CHAT, json=ASK, headers=bearer(SHARED_A)).headers[HEADER] == "miss"
    assert client.post(CHAT, json=ASK, headers=bearer(SHARED_B)).headers[HEADER] == "hit"
    off = client.post(CHAT, json=ASK, headers=bearer(OFF_KEY))
    assert off.status_code == 200 and HEADER not in off.headers
    assert calls(state) == 4


def test_generate_is_cached_plain_and_streamed(client: TestClient, state: StandinState) -> None:
    ask = {"prompt": "Name a colour.", "temperature": 0}
    plain = client.post(GENERATE, json=ask, headers=AUTH)
    assert plain.headers[HEADER] == "miss"
    streamed = client.post(GENERATE, json={**ask, "stream": True}, headers=AUTH)
    assert streamed.headers[HEADER] == "hit"
    events = [
        json.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: {")
    ]
    assert "".join(e.get("text", "") for e in events) == plain.json()["text"]
    assert events[-1]["finish_reason"] == "stop" and events[-1]["usage"] == plain.json()["usage"]
    assert streamed.text.endswith("data: [DONE]\n\n")
    # A streamed miss is kept too, and answers a plain request.
    other = {"prompt": "Name a fruit.", "temperature": 0}
    assert client.post(GENERATE, json={**other, "stream": True}, headers=AUTH).headers[HEADER] == (
        "miss"
    )
    again = client.post(GENERATE, json=other, headers=AUTH)
    assert again.headers[HEADER] == "hit" and again.json()["text"].endswith("Name a fruit.")
    assert calls(state) == 2


def test_a_half_cached_embeddings_batch_sends_only_the_other_half_upstream(
    client: TestClient, state: StandinState
) -> None:
    first = client.post(EMBED, json={"input": ["alpha", "beta"]}, headers=AUTH)
    assert first.status_code == 200 and first.headers[HEADER] == "miss"
    state.received.clear()
    second = client.post(EMBED, json={"input": ["beta", "gamma", "alpha"]}, headers=AUTH)
    assert second.status_code == 200 and second.headers[HEADER] == "miss"
    sent = [seen["json"]["inputs"] for seen in state.received]
    assert sent == [["gamma"]]
    vectors = {"alpha": first.json()["data"][0]["embedding"]}
    assert second.json()["data"][2]["embedding"] == vectors["alpha"]
    assert [item["index"] for item in second.json()["data"]] == [0, 1, 2]
    whole = client.post(
        EMBED, json={"input": ["gamma", "alpha"], "encoding_format": "base64"}, headers=AUTH
    )
    assert whole.headers[HEADER] == "hit" and isinstance(whole.json()["data"][0]["embedding"], str)
    assert len(state.received) == 1


def test_an_entry_larger_than_the_limit_is_not_kept(
    standin: tuple[StandinState, str], state: StandinState, store_url: str | None
) -> None:
    app = cache_app(standin[1], store_url, cache_max_entry_bytes=1024)
    large = completion("many words " * 100)
    state.faults[:] = [Fault(status=200, body=large), Fault(status=200, body=large)]
    with TestClient(audited(app)) as client:
        assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "miss"
        assert client.post(CHAT, json=ASK, headers=AUTH).headers[HEADER] == "miss"
        small = {**ASK, "messages": [{"role": "user", "content": "Small?"}]}
        assert client.post(CHAT, json=small, headers=AUTH).headers[HEADER] == "miss"
        assert client.post(CHAT, json=small, headers=AUTH).headers[HEADER] == "hit"
    assert calls(state) == 3


def test_a_hit_counts_one_request_no_tokens_and_shows_in_the_ledger_with_the_tokens_saved(
    client: TestClient, state: StandinState
) -> None:
    miss = client.post(CHAT, json=ASK, headers=AUTH)
    before = client.get("/api/limits", headers=AUTH).json()["remaining"]
    hit = client.post(CHAT, json=ASK, headers=AUTH)
    after = client.get("/api/limits", headers=AUTH).json()["remaining"]
    assert hit.headers[HEADER] == "hit"
    assert after["requests_this_minute"] == before["requests_this_minute"] - 1
    assert after["tokens_this_minute"] == before["tokens_this_minute"]
    report = client.get("/api/usage", headers=bearer(ADMIN_KEY)).json()
    app_group = next(g for g in report["groups"] if g["group"] == "app")
    saved = miss.json()["usage"]["prompt_tokens"] + miss.json()["usage"]["completion_tokens"]
    assert app_group["requests"] == 2 and app_group["cache_hits"] == 1
    assert app_group["tokens_saved"] == saved
    assert app_group["total_tokens"] == saved  # only the miss spent tokens
    csv = client.get("/api/usage", headers={**bearer(ADMIN_KEY), "Accept": "text/csv"}).text
    assert csv.splitlines()[0].endswith("cache_hits,tokens_saved")


def test_a_token_minted_without_the_cache_is_never_cached(
    client: TestClient, state: StandinState
) -> None:
    minted = client.post("/v1/tokens", json={"user": "u-1", "cache": False}, headers=AUTH)
    assert minted.status_code == 200, minted.text
    token = bearer(minted.json()["token"])
    for _ in range(2):
        answer = client.post(CHAT, json=ASK, headers=token)
        assert answer.status_code == 200 and HEADER not in answer.headers
    assert minted.json()["cache"] is False
    allowed = bearer(client.post("/v1/tokens", json={"user": "u-2"}, headers=AUTH).json()["token"])
    assert client.post(CHAT, json=ASK, headers=allowed).headers[HEADER] == "miss"  # none kept
    assert client.post(CHAT, json=ASK, headers=allowed).headers[HEADER] == "hit"
    assert calls(state) == 3


def test_a_frozen_store_is_a_miss_that_costs_no_more_than_the_bound(
    standin: tuple[StandinState, str], state: StandinState
) -> None:
    bound = 0.25
    with run_redis_server() as server:
        app = cache_app(standin[1], server.url, limits_store_timeout_s=bound)
        with TestClient(audited(app)) as client:
            assert client.post(CHAT, json=ASK, headers=bearer(OTHER_KEY)).headers[HEADER] == "miss"
            started = time.monotonic()
            client.post(CHAT, json=ASK, headers=bearer(OTHER_KEY))
            warm = time.monotonic() - started
            with server.stopped():
                started = time.monotonic()
                frozen = client.post(CHAT, json=ASK, headers=bearer(OTHER_KEY))
                first = time.monotonic() - started
                started = time.monotonic()
                again = [client.post(CHAT, json=ASK, headers=bearer(OTHER_KEY)) for _ in range(3)]
                rest = time.monotonic() - started
    assert frozen.status_code == 200 and frozen.headers[HEADER] == "miss"
    assert all(r.status_code == 200 and r.headers[HEADER] == "miss" for r in again)
    # `other` has no limits: the cache's read is the only wait, one bound; then the cache
    # rests and the next requests wait for nothing.
    assert first < bound + warm + 0.5, first
    assert rest < 0.5 * 3, rest


RESPONSES = "/v1/responses"
RESPOND = {"model": "HuggingFaceTB/SmolLM3-3B", "input": "What is a cache?", "temperature": 0}


def sdk(client: TestClient) -> Any:
    from openai import OpenAI

    return OpenAI(
        base_url="http://testserver/v1", api_key=CANARY_KEY, http_client=client, max_retries=0
    )


def test_a_response_is_cached_and_replays_as_the_stream_the_openai_helper_reads(
    client: TestClient, state: StandinState
) -> None:
    plain = client.post(RESPONSES, json=RESPOND, headers=AUTH)
    assert plain.status_code == 200 and plain.headers[HEADER] == "miss"
    again = client.post(RESPONSES, json=RESPOND, headers=AUTH)
    assert again.headers[HEADER] == "hit" and again.json() == plain.json()
    with sdk(client).responses.stream(**RESPOND) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == plain.json()["output"][0]["content"][0]["text"]
    assert (
        final.usage is not None
        and final.usage.total_tokens == plain.json()["usage"]["total_tokens"]
    )
    events = list(sdk(client).responses.create(**RESPOND, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert calls(state, RESPONSES) == 1


def test_a_streamed_response_is_kept_once_completed_and_a_broken_one_never(
    client: TestClient, state: StandinState
) -> None:
    state.faults[:] = [Fault(error_after=2)]
    broken = client.post(RESPONSES, json={**RESPOND, "stream": True}, headers=AUTH)
    assert b"event: error" in broken.content
    streamed = list(sdk(client).responses.create(**RESPOND, stream=True))
    assert streamed[-1].type == "response.completed"
    plain = client.post(RESPONSES, json=RESPOND, headers=AUTH)
    assert plain.headers[HEADER] == "hit"
    assert plain.json()["id"] == streamed[-1].response.id
    assert plain.json()["output"][0]["content"][0]["text"] == streamed[-1].response.output_text
    assert calls(state, RESPONSES) == 2


def test_a_function_call_and_a_response_cut_at_max_output_tokens_replay_as_they_came(
    client: TestClient, state: StandinState
) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    ask = {**RESPOND, "input": "Weather in Paris?", "tools": tools}
    first = sdk(client).responses.create(**ask)
    with sdk(client).responses.stream(**ask) as stream:
        list(stream)
        replayed = stream.get_final_response()
    assert replayed.output[0].type == "function_call"
    assert replayed.output[0].arguments == first.output[0].arguments
    short = {**RESPOND, "max_output_tokens": 3}
    assert sdk(client).responses.create(**short).status == "incomplete"
    events = list(sdk(client).responses.create(**short, stream=True))
    assert events[-1].type == "response.incomplete"
    assert calls(state, RESPONSES) == 2


def test_a_stored_response_is_refused_before_the_cache_is_asked(client: TestClient) -> None:
    refused = client.post(RESPONSES, json={**RESPOND, "store": True}, headers=AUTH)
    assert refused.status_code == 400 and HEADER not in refused.headers


def test_in_redis_a_key_s_entries_are_under_its_hash_tag_and_shared_ones_under_their_own(
    standin: tuple[StandinState, str], state: StandinState, redis_server: Any
) -> None:
    redis_server.flush()
    with TestClient(audited(cache_app(standin[1], redis_server.url))) as client:
        client.post(CHAT, json=ASK, headers=AUTH)
        client.post(CHAT, json=ASK, headers=bearer(SHARED_A))
        client.post(EMBED, json={"input": ["one", "two"]}, headers=AUTH)
    reply = redis_server.command("KEYS", "*:cache:*").split("\r\n")
    keys = sorted(line for line in reply if line and line[0] not in "*$")
    assert len(keys) == 4, keys
    assert sum(k.startswith("promptgate:{app}:cache:") for k in keys) == 3
    assert sum(k.startswith("promptgate:{~cache}:cache:") for k in keys) == 1
    ttl = int(redis_server.command("TTL", keys[0]).strip().lstrip(":"))
    assert 0 < ttl <= 600


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, ASK),
        (CHAT, {**ASK, "stream": True}),
        (GENERATE, {"prompt": "Name a colour.", "temperature": 0}),
        (GENERATE, {"prompt": "Name a colour.", "temperature": 0, "stream": True}),
        (RESPONSES, RESPOND),
        (RESPONSES, {**RESPOND, "stream": True}),
        (EMBED, {"input": ["alpha"]}),
    ],
    ids=[
        "chat",
        "chat-stream",
        "generate",
        "generate-stream",
        "responses",
        "responses-stream",
        "embeddings",
    ],
)
def test_every_route_answers_miss_then_hit_and_bypass_under_no_cache(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    verdicts = [client.post(path, json=body, headers=AUTH).headers[HEADER] for _ in range(2)]
    fresh = client.post(path, json=body, headers={**AUTH, "Cache-Control": "no-cache"})
    assert fresh.status_code == 200
    assert [*verdicts, fresh.headers[HEADER]] == ["miss", "hit", "bypass"]


def test_a_tool_call_replays_as_a_stream_the_openai_client_gathers(
    client: TestClient, state: StandinState
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = {**ASK, "tools": tools}
    plain = client.post(CHAT, json=ask, headers=AUTH).json()
    assert plain["choices"][0]["finish_reason"] == "tool_calls"
    with sdk(client).chat.completions.stream(
        model="HuggingFaceTB/SmolLM3-3B", messages=ASK["messages"], temperature=0, tools=tools
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    kept = plain["choices"][0]["message"]["tool_calls"][0]
    assert (call.id, call.function.name, call.function.arguments) == (
        kept["id"],
        kept["function"]["name"],
        kept["function"]["arguments"],
    )
    assert final.choices[0].finish_reason == "tool_calls"
    assert calls(state) == 1


MODEL_A, MODEL_B = "org/model-a", "org/model-b"
EMBED_1, EMBED_2 = "org/embed-1", "org/embed-2"
FALLBACK_POLICY = f"""
[defaults]
cache_ttl_s = 600

[keys.app]
sha256 = "{sha256_hex(CANARY_KEY)}"

[fallbacks]
"{MODEL_A}" = ["{MODEL_B}"]
"{EMBED_1}" = ["{EMBED_2}"]
"""


@pytest.fixture
def with_fallbacks(
    standin: tuple[StandinState, str], state: StandinState, store_url: str | None
) -> Iterator[TestClient]:
    app = cache_app(
        standin[1],
        store_url,
        keys_toml=FALLBACK_POLICY,
        allowed_models=f"{MODEL_A},{MODEL_B},{EMBED_1},{EMBED_2}",
        fallback_timeout_s=1.0,
        fallback_breaker_failures=100,
    )
    with TestClient(audited(app)) as test_client:
        yield test_client


def test_a_fallback_s_answer_is_not_kept_and_a_hit_never_falls_back(
    with_fallbacks: TestClient, state: StandinState
) -> None:
    ask = {**ASK, "model": MODEL_A}
    state.model_faults[MODEL_A] = Fault(status=503)
    fell = with_fallbacks.post(CHAT, json=ask, headers=AUTH)
    assert fell.status_code == 200 and fell.headers["x-promptgate-fallback"] == MODEL_B
    assert fell.headers[HEADER] == "miss"
    state.model_faults.clear()
    again = with_fallbacks.post(CHAT, json=ask, headers=AUTH)
    assert again.headers[HEADER] == "miss" and "x-promptgate-fallback" not in again.headers
    assert again.json()["model"] == MODEL_A
    state.model_faults[MODEL_A] = Fault(status=503)  # down again: the hit calls no model
    hit = with_fallbacks.post(CHAT, json={**ask, "stream": True}, headers=AUTH)
    assert hit.headers[HEADER] == "hit" and "x-promptgate-fallback" not in hit.headers
    sent = [seen["json"]["model"] for seen in state.received if seen["path"] == CHAT]
    assert sent == [MODEL_A, MODEL_B, MODEL_A]


def test_with_fallbacks_a_half_cached_embeddings_batch_goes_upstream_whole(
    with_fallbacks: TestClient, state: StandinState
) -> None:
    first = with_fallbacks.post(EMBED, json={"model": EMBED_1, "input": ["a"]}, headers=AUTH)
    assert first.headers[HEADER] == "miss"
    state.received.clear()
    state.model_faults[EMBED_1] = Fault(status=429)
    mixed = with_fallbacks.post(EMBED, json={"model": EMBED_1, "input": ["a", "b"]}, headers=AUTH)
    assert mixed.status_code == 200 and mixed.headers["x-promptgate-fallback"] == EMBED_2
    assert mixed.json()["model"] == EMBED_2
    sent = [seen["json"]["inputs"] for seen in state.received if EMBED_2 in seen["path"]]
    assert sent == [["a", "b"]]  # both from the fallback, none of the cached vector mixed in
    state.model_faults.clear()
    assert (
        with_fallbacks.post(EMBED, json={"model": EMBED_1, "input": ["b"]}, headers=AUTH).headers[
            HEADER
        ]
        == "miss"
    )  # the fallback's vectors were not kept
