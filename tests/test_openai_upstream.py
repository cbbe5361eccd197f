"""`UPSTREAM_API=openai`: promptgate in front of an OpenAI-compatible model server.

The stand-in plays the server (`StandinState(api="openai")`, no token, like Ollama); the proxy
and the stand-in both run under uvicorn on loopback, and the official clients call the proxy.
"""

from __future__ import annotations

import base64
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from lib.app import create_app
from lib.settings import SettingsError, load_settings
from lib.standin import EMBEDDING_DIMENSIONS, Fault, StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN, make_settings
from tests.secret_audit import AUDIT
from tests.servers import serve_on_loopback

if TYPE_CHECKING:
    from openai import OpenAI

CHAT_MODEL = "smollm2:360m"  # Ollama's names, as examples/compose-local-model uses them
EMBEDDER = "all-minilm"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Live:
    """The proxy in `openai` mode and the stand-in model server, both on loopback."""

    url: str
    server: StandinState


def _live(state: StandinState, **settings: object) -> Iterator[Live]:
    with serve_on_loopback(create_standin_app(state)) as server_url:
        values = {
            "hf_base_url": server_url,
            "upstream_api": "openai",
            "hf_token": None,
            "default_model": CHAT_MODEL,
            "embedding_model": EMBEDDER,
            **settings,
        }
        with serve_on_loopback(create_app(make_settings(**values))) as url:
            yield Live(url, state)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    yield from _live(StandinState(token=None, api="openai"))


def _openai(live: Live) -> OpenAI:
    from openai import OpenAI

    return OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY, max_retries=0)


def _expected_vector(text: str) -> list[float]:
    from lib.standin import text_vector

    return text_vector(text)


# --- chat --------------------------------------------------------------------------------


def test_chat_goes_to_the_servers_v1_route_without_a_token(live: Live) -> None:
    completion = _openai(live).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "ping"}], max_tokens=40
    )
    assert completion.choices[0].message.content.endswith("You said: ping")
    received = live.server.received[-1]
    assert received["path"] == "/v1/chat/completions"
    assert received["json"]["model"] == CHAT_MODEL
    assert received["json"]["max_tokens"] == 40
    # No HF_TOKEN in this mode: no Authorization header at all, not an empty bearer.
    assert "authorization" not in received["headers"]
    assert CANARY_KEY not in str(received["headers"])


def test_chat_streams_event_by_event_with_usage(live: Live) -> None:
    stream = _openai(live).chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("You said: stream please")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert live.server.received[-1]["json"]["stream"] is True


def test_the_default_model_is_the_servers_and_others_must_be_allowed(live: Live) -> None:
    from openai import PermissionDeniedError

    reply = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {CANARY_KEY}"},
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert live.server.received[-1]["json"]["model"] == CHAT_MODEL
    with pytest.raises(PermissionDeniedError):
        _openai(live).chat.completions.create(
            model="llama3:70b", messages=[{"role": "user", "content": "hi"}]
        )


def test_upstream_errors_keep_their_meaning(live: Live) -> None:
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as caught:
        _openai(live).chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi #standin:404"}]
        )
    assert caught.value.body["code"] == "model_not_found"


# --- embeddings ------------------------------------------------------------------------------


def test_embeddings_are_relayed_from_v1_embeddings_in_the_sdks_base64(live: Live) -> None:
    result = _openai(live).embeddings.create(model=EMBEDDER, input=["first text", "second"])
    assert [item.index for item in result.data] == [0, 1]
    for item, text in zip(result.data, ["first text", "second"], strict=True):
        assert item.embedding == pytest.approx(_expected_vector(text), abs=1e-6)
    received = live.server.received[-1]
    assert received["path"] == "/v1/embeddings"
    assert received["json"]["input"] == ["first text", "second"]
    assert received["json"]["model"] == EMBEDDER
    # The SDK asked for base64; the server is asked for floats, which every server returns.
    assert received["json"]["encoding_format"] == "float"
    assert result.usage.prompt_tokens == 3  # the server's own count


def test_embeddings_honour_encoding_format_on_the_wire(live: Live) -> None:
    for encoding in ("float", "base64"):
        reply = httpx.post(
            f"{live.url}/v1/embeddings",
            headers={"Authorization": f"Bearer {CANARY_KEY}"},
            json={"input": "one text", "encoding_format": encoding},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] == EMBEDDER  # the deployment's default embedding model
        vector = body["data"][0]["embedding"]
        if encoding == "base64":
            raw = base64.b64decode(vector)
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        else:
            assert isinstance(vector, list)
        assert len(vector) == EMBEDDING_DIMENSIONS
        assert vector == pytest.approx(_expected_vector("one text"), abs=1e-6)


def test_embeddings_dimensions_pass_through_and_a_mismatch_is_refused(live: Live) -> None:
    from openai import BadRequestError

    short = _openai(live).embeddings.create(
        model=EMBEDDER, input="shorter", dimensions=128, encoding_format="float"
    )
    assert len(short.data[0].embedding) == 128
    assert live.server.received[-1]["json"]["dimensions"] == 128
    # This server cannot widen a vector: the proxy says so instead of answering 384 numbers.
    with pytest.raises(BadRequestError) as caught:
        _openai(live).embeddings.create(model=EMBEDDER, input="wider", dimensions=1024)
    assert caught.value.body["param"] == "dimensions"


def test_long_input_lists_go_to_the_server_in_batches_and_come_back_in_order() -> None:
    texts = [f"text number {i}" for i in range(5)]
    for live in _live(StandinState(token=None, api="openai"), embedding_batch_size=2):
        result = _openai(live).embeddings.create(model=EMBEDDER, input=texts)
        sent = [r["json"]["input"] for r in live.server.received]
        assert sorted(sent) == [texts[0:2], texts[2:4], texts[4:5]]  # sent concurrently
        for item, text in zip(result.data, texts, strict=True):
            assert item.embedding == pytest.approx(_expected_vector(text), abs=1e-6)
        assert result.usage.prompt_tokens == 15  # the server's counts, summed


def test_a_requested_embedding_model_takes_no_tag_but_the_default_may(live: Live) -> None:
    from openai import UnprocessableEntityError

    # The API's schema takes a plain id in a request in both modes; a tagged Ollama model
    # is served as EMBEDDING_MODEL (or under a tag-less alias).
    with pytest.raises(UnprocessableEntityError):
        _openai(live).embeddings.create(model="all-minilm:l6-v2", input="tagged")
    for tagged in _live(StandinState(token=None, api="openai"), embedding_model="all-minilm:l6-v2"):
        httpx.post(
            f"{tagged.url}/v1/embeddings",
            headers={"Authorization": f"Bearer {CANARY_KEY}"},
            json={"input": "tagged"},
            timeout=10,
        ).raise_for_status()
        assert tagged.server.received[-1]["json"]["model"] == "all-minilm:l6-v2"


def test_vectors_come_back_in_input_order_whatever_order_the_server_sends(live: Live) -> None:
    live.server.faults.append(
        Fault(body=b'{"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1]}]}')
    )
    result = _openai(live).embeddings.create(
        model=EMBEDDER, input=["a", "b"], encoding_format="float"
    )
    assert [item.embedding for item in result.data] == [[1.0], [2.0]]


@pytest.mark.parametrize(
    "answer",
    [
        b'{"data": [{"index": 0, "embedding": [1.0]}]}',  # one vector for two inputs
        b'{"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}',
        b'{"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}',
        b'{"data": [{"index": 0, "embedding": [1e39]}, {"index": 1, "embedding": [1.0]}]}',
        b'{"data": [{"index": 0, "embedding": [NaN]}, {"index": 1, "embedding": [1.0]}]}',
        b'{"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [1.0]}]}',
        b'{"object": "list"}',
    ],
)
def test_an_unusable_embeddings_answer_is_a_502(live: Live, answer: bytes) -> None:
    live.server.faults.append(Fault(body=answer))
    reply = httpx.post(
        f"{live.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {CANARY_KEY}"},
        json={"input": ["a", "b"]},
        timeout=10,
    )
    assert reply.status_code == 502, reply.text
    assert reply.json()["error"]["type"] == "upstream_error"


# --- what the router alone has -------------------------------------------------------------


def test_task_routes_answer_a_clear_404_that_names_the_router(live: Live) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    sent_before = len(live.server.received)
    for path in ("/models/org/classifier", "/models/org/embedder/pipeline/feature-extraction"):
        reply = httpx.post(
            f"{live.url}{path}",
            headers={"Authorization": f"Bearer {CANARY_KEY}"},
            json={"inputs": "I love this proxy!"},
            timeout=10,
        )
        assert reply.status_code == 404, reply.text
        assert "UPSTREAM_API=hf-router" in reply.json()["error"]
        assert "UPSTREAM_API=hf-router" in reply.headers["x-error-message"]
    classifier = InferenceClient(model=f"{live.url}/models/org/classifier", api_key=CANARY_KEY)
    with pytest.raises(HfHubHTTPError, match="router"):
        classifier.text_classification("I love this proxy!")
    # Keys still come first: no key, no hint about the upstream.
    anonymous = httpx.post(f"{live.url}/models/org/classifier", json={"inputs": "x"}, timeout=10)
    assert anonymous.status_code == 401
    assert len(live.server.received) == sent_before  # nothing reached the server


def test_a_models_chat_route_still_works_since_it_is_plain_chat() -> None:
    from huggingface_hub import InferenceClient

    vllm_model = "HuggingFaceTB/SmolLM2-360M-Instruct"  # vLLM serves Hub ids as they are
    for live in _live(StandinState(token=None, api="openai"), allowed_models=vllm_model):
        client = InferenceClient(model=f"{live.url}/models/{vllm_model}", api_key=CANARY_KEY)
        reply = client.chat_completion(messages=[{"role": "user", "content": "hello"}])
        assert reply.choices[0].message.content.endswith("You said: hello")
        assert live.server.received[-1]["path"] == "/v1/chat/completions"
        assert live.server.received[-1]["json"]["model"] == vllm_model


def test_models_lists_the_allowlist_not_the_servers_models(live: Live) -> None:
    models = [m.id for m in _openai(live).models.list()]
    assert models == [CHAT_MODEL, EMBEDDER]


# --- the token -------------------------------------------------------------------------------


def test_a_server_that_wants_a_token_gets_hf_token_as_its_bearer() -> None:
    for live in _live(StandinState(token=CANARY_TOKEN, api="openai"), hf_token=CANARY_TOKEN):
        reply = _openai(live).embeddings.create(model=EMBEDDER, input="with a token")
        assert len(reply.data) == 1
        assert live.server.received[-1]["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}"


def test_without_a_token_the_router_mode_still_refuses_to_call_upstream() -> None:
    state = StandinState(token=None)
    for live in _live(state, upstream_api="hf-router"):
        reply = httpx.post(
            f"{live.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {CANARY_KEY}"},
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert reply.status_code == 503
        assert "HF_TOKEN" in reply.json()["error"]["message"]
        assert state.received == []


def test_upstream_api_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_API", " OpenAI ")
    assert load_settings(_env_file=None).upstream_api == "openai"
    monkeypatch.delenv("UPSTREAM_API")
    assert load_settings(_env_file=None).upstream_api == "hf-router"
    monkeypatch.setenv("UPSTREAM_API", "anthropic")
    with pytest.raises(SettingsError, match="invalid setting UPSTREAM_API"):
        load_settings(_env_file=None)


# --- make dev --------------------------------------------------------------------------------


def test_make_dev_in_openai_mode_without_a_token_answers_from_the_standin(
    tmp_path: Path,
) -> None:
    from lib.devserver import DEV_CLIENT_KEY

    with serve_on_loopback(create_standin_app(StandinState())) as probe:
        port = int(probe.rsplit(":", 1)[1])  # a port known to be free once this server stops
    names = ("HF_TOKEN", "PROXY_API_KEYS", "ALLOW_ANONYMOUS", "HF_BASE_URL", "ALLOWED_MODELS")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(PORT=str(port), PYTHONPATH=str(REPO), UPSTREAM_API="openai")
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "lib.devserver"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {DEV_CLIENT_KEY}"}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.1)
        banner = stderr_path.read_text()
        assert "an OpenAI-compatible model server" in banner
        assert httpx.get(f"{url}/api/health").json()["token_configured"] is False
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            headers=auth,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            timeout=10,
        )
        assert chat.status_code == 200, chat.text
        embedded = httpx.post(f"{url}/v1/embeddings", headers=auth, json={"input": "x"})
        assert embedded.status_code == 200, embedded.text
        task = httpx.post(f"{url}/models/org/name", headers=auth, json={"inputs": "x"})
        assert task.status_code == 404
        assert re.search(r"UPSTREAM_API=hf-router", task.json()["error"])
    finally:
        process.terminate()
        process.wait(timeout=10)
        AUDIT.scan("make dev (openai) stderr", stderr_path.read_bytes())
