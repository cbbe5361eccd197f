"""Fallbacks to a second upstream (`UPSTREAM_FALLBACK_URL`): a team's own OpenAI-compatible
server (no token, like Ollama) falls back to another that wants its own bearer. Each upstream
gets its own token only, and the second one's never reaches a caller or a log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from lib.app import create_app
from lib.standin import Fault, StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN, make_settings
from tests.secret_audit import AUDIT
from tests.servers import serve_on_loopback

# The second upstream's credential: obviously fake, watched like the others.
FALLBACK_TOKEN = "hf_test_canary_fallback_token_9b3e71"
AUDIT.watch(FALLBACK_TOKEN)
OWN, ROUTED = "team/own-model", "org/model-b"
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
HELLO = [{"role": "user", "content": "Hello?"}]


@dataclass
class Upstreams:
    """The proxy's URL, and the two stand-ins behind it."""

    url: str
    own: StandinState
    second: StandinState


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    own = StandinState(token=None, api="openai")
    second = StandinState(token=FALLBACK_TOKEN, api="openai")
    # The second stand-in is scripted to echo its token below: its own answers are not audited
    # (the proxy's are).
    with (
        serve_on_loopback(create_standin_app(own), log_level="critical") as own_url,
        serve_on_loopback(create_standin_app(second), log_level="critical", audit=False) as url2,
    ):
        settings = make_settings(
            hf_token=None,
            hf_base_url=own_url,
            upstream_api="openai",
            upstream_fallback_url=url2,
            upstream_fallback_token=FALLBACK_TOKEN,
            allowed_models=f"{OWN},{ROUTED}",
            default_model=OWN,
            embedding_model=OWN,
            fallbacks={
                OWN: [{"model": OWN, "upstream": "fallback"}, ROUTED],
                ROUTED: [{"model": ROUTED, "upstream": "fallback"}],
            },
            fallback_timeout_s=1.0,
        )
        with serve_on_loopback(create_app(settings)) as url:
            yield Upstreams(url, own, second)


def _sent(state: StandinState, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    return [r for r in state.received if r["path"] == path]


def test_a_failing_own_server_falls_back_to_the_second_upstream_with_its_own_token(
    upstreams: Upstreams,
) -> None:
    upstreams.own.model_faults[OWN] = Fault(status=503)
    client = openai.OpenAI(base_url=f"{upstreams.url}/v1", api_key=CANARY_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=OWN, messages=HELLO)
    completion = raw.parse()
    assert completion.model == OWN and completion.choices[0].message.content
    assert raw.headers["x-promptgate-fallback"] == OWN  # the same model, the other upstream
    (own,) = _sent(upstreams.own)
    (second,) = _sent(upstreams.second)
    assert "authorization" not in own["headers"]  # the own server wants none, gets none
    assert second["headers"]["authorization"] == f"Bearer {FALLBACK_TOKEN}"


def test_a_stream_falls_back_to_the_second_upstream_before_its_first_byte(
    upstreams: Upstreams,
) -> None:
    upstreams.own.model_faults[OWN] = Fault(cut_before_first=True)
    client = openai.OpenAI(base_url=f"{upstreams.url}/v1", api_key=CANARY_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(model=OWN, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(_sent(upstreams.own)) == 1 and len(_sent(upstreams.second)) == 1


def test_a_model_falls_back_to_itself_on_the_second_upstream(upstreams: Upstreams) -> None:
    upstreams.own.model_faults[ROUTED] = Fault(status=429)
    response = httpx.post(
        f"{upstreams.url}/v1/chat/completions",
        json={"model": ROUTED, "messages": HELLO},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 200 and response.headers["x-promptgate-fallback"] == ROUTED
    assert response.json()["model"] == ROUTED


def test_the_second_upstream_s_token_is_redacted_from_what_it_says(
    upstreams: Upstreams,
) -> None:
    upstreams.own.model_faults[OWN] = Fault(status=500)
    echo = {"error": f"invalid model for key {FALLBACK_TOKEN}"}
    upstreams.second.model_faults[OWN] = Fault(status=422, body=json.dumps(echo).encode())
    response = httpx.post(
        f"{upstreams.url}/v1/chat/completions",
        json={"model": OWN, "messages": HELLO},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 422  # a 4xx does not move on to the third hop
    assert "[redacted]" in response.json()["error"]["message"]
    assert FALLBACK_TOKEN[:12] not in response.text + str(response.headers)
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": OWN,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": FALLBACK_TOKEN}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    upstreams.second.model_faults[OWN] = Fault(body=json.dumps(answer).encode())
    response = httpx.post(
        f"{upstreams.url}/v1/chat/completions",
        json={"model": OWN, "messages": HELLO},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "[redacted]"


def test_embeddings_fall_back_to_the_second_upstream(upstreams: Upstreams) -> None:
    upstreams.own.model_faults[OWN] = Fault(status=503)
    client = openai.OpenAI(base_url=f"{upstreams.url}/v1", api_key=CANARY_KEY, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=OWN, input=["a", "b"])
    assert raw.headers["x-promptgate-fallback"] == OWN and len(raw.parse().data) == 2
    (sent,) = _sent(upstreams.second, "/v1/embeddings")
    assert sent["headers"]["authorization"] == f"Bearer {FALLBACK_TOKEN}"


def test_the_main_token_never_goes_to_the_second_upstream(upstreams: Upstreams) -> None:
    # The canary HF_TOKEN is not even set here; with it set, the second upstream still gets
    # only its own: the two clients share nothing but the transport's kind.
    from lib.settings import load_settings

    settings = load_settings(
        _env_file=None,
        hf_token=CANARY_TOKEN,
        upstream_api="openai",
        upstream_fallback_url=upstreams.url,
    )
    second = settings.fallback_upstream_settings()
    assert second is not None and second.hf_token is None


def test_the_second_upstream_refusing_its_token_names_its_setting(upstreams: Upstreams) -> None:
    upstreams.own.model_faults[ROUTED] = Fault(status=500)
    upstreams.second.model_faults[ROUTED] = Fault(status=401)
    response = httpx.post(
        f"{upstreams.url}/v1/chat/completions",
        json={"model": ROUTED, "messages": HELLO},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "check UPSTREAM_FALLBACK_TOKEN" in message and "HF_TOKEN" not in message
