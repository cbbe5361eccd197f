"""Large embedding requests reach the upstream as concurrent batches and come back whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi.testclient import TestClient

from lib.app import create_app
from lib.inference import EMBEDDING_CONCURRENCY
from tests.conftest import AUTH, make_settings
from tests.secret_audit import audited

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PIPELINE = f"/hf-inference/models/{MODEL}/pipeline/feature-extraction"


def vector_of(text: str) -> list[float]:
    """A vector that tells which text it belongs to."""
    number = int(text.removeprefix("text "))
    return [float(number), 1.0, -1.0]


@dataclass
class FakeEmbedder:
    """An upstream feature-extraction pipeline that records batches and concurrency."""

    fail_batch: int | None = None  # answer this batch (by arrival) with `fail_status`
    fail_status: int = 429
    hang_batch: int | None = None  # never answer this batch
    bodies: list[dict] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        number = len(self.bodies) - 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(60 if number == self.hang_batch else 0.02)
        finally:
            self.in_flight -= 1
        if number == self.fail_batch:
            return httpx.Response(self.fail_status, json={"error": "Too many requests"})
        return httpx.Response(200, json=[vector_of(text) for text in body["inputs"]])


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


def client_for(embedder: FakeEmbedder, **overrides) -> TestClient:
    settings = make_settings(hf_base_url="https://upstream.test", **overrides)
    app = create_app(settings, transport=httpx.MockTransport(embedder))
    return TestClient(audited(app), raise_server_exceptions=False)


@pytest.fixture
def client(embedder: FakeEmbedder) -> Iterator[TestClient]:
    with client_for(embedder) as test_client:
        yield test_client


TEXTS = [f"text {i}" for i in range(1000)]


def test_a_thousand_inputs_go_up_in_concurrent_batches_and_come_back_in_order(
    client: TestClient, embedder: FakeEmbedder
) -> None:
    response = client.post("/v1/embeddings", json={"input": TEXTS}, headers=AUTH)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(1000))
    assert [item["embedding"] for item in data] == [vector_of(text) for text in TEXTS]
    assert len(embedder.bodies) == 32  # ceil(1000 / 32)
    assert all(len(body["inputs"]) <= 32 for body in embedder.bodies)
    assert sorted(t for body in embedder.bodies for t in body["inputs"]) == sorted(TEXTS)
    assert 1 < embedder.most_in_flight <= EMBEDDING_CONCURRENCY


def test_the_batch_size_is_a_setting(embedder: FakeEmbedder) -> None:
    with client_for(embedder, embedding_batch_size=256) as client:
        response = client.post("/v1/embeddings", json={"input": TEXTS}, headers=AUTH)
    assert response.status_code == 200
    assert [len(body["inputs"]) for body in embedder.bodies] == [256, 256, 256, 232]


def test_the_most_inputs_allowed_are_embedded(client: TestClient, embedder: FakeEmbedder) -> None:
    texts = [f"text {i}" for i in range(2048)]
    response = client.post("/v1/embeddings", json={"input": texts}, headers=AUTH)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2048 and len(embedder.bodies) == 64


def test_one_failed_batch_fails_the_request_and_stops_the_rest(
    client: TestClient, embedder: FakeEmbedder
) -> None:
    embedder.fail_batch = 1
    response = client.post("/v1/embeddings", json={"input": TEXTS}, headers=AUTH)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert len(embedder.bodies) < 32  # the batches not yet sent were cancelled


def test_a_batch_the_upstream_refuses_fails_the_request_with_its_status(
    client: TestClient, embedder: FakeEmbedder
) -> None:
    embedder.fail_batch, embedder.fail_status = 3, 402
    response = client.post("/v1/embeddings", json={"input": TEXTS}, headers=AUTH)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_quota"


def test_all_batches_share_the_request_deadline(embedder: FakeEmbedder) -> None:
    embedder.hang_batch = 5
    with client_for(embedder, request_timeout_s=1.0) as client:
        response = client.post("/v1/embeddings", json={"input": TEXTS}, headers=AUTH)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"


def test_feature_extraction_task_route_splits_long_lists_and_keeps_options(
    client: TestClient, embedder: FakeEmbedder
) -> None:
    texts = TEXTS[:100]
    body = {"inputs": texts, "normalize": True, "truncate": True}
    response = client.post(f"/models/{MODEL}/pipeline/feature-extraction", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == [vector_of(text) for text in texts]
    assert [len(sent["inputs"]) for sent in embedder.bodies] == [32, 32, 32, 4]
    assert all(sent["normalize"] is True and sent["truncate"] is True for sent in embedder.bodies)


def test_feature_extraction_task_route_refuses_more_than_the_maximum(
    client: TestClient, embedder: FakeEmbedder
) -> None:
    texts = [f"text {i}" for i in range(2049)]
    response = client.post(
        f"/models/{MODEL}/pipeline/feature-extraction", json={"inputs": texts}, headers=AUTH
    )
    assert response.status_code == 422
    assert "At most 2048 inputs" in response.json()["error"]
    assert not embedder.bodies


def test_an_answer_over_vercel_s_cap_is_streamed_in_pieces(client: TestClient) -> None:
    """2,048 vectors as float JSON outgrow Vercel's 4.5 MB unless sent in pieces."""
    texts = [f"text {i}" for i in range(2048)]

    async def wide_vectors(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        return httpx.Response(200, json=[[0.123456789] * 384 for _ in inputs])

    app = create_app(
        make_settings(hf_base_url="https://upstream.test"),
        transport=httpx.MockTransport(wide_vectors),
    )
    with TestClient(audited(app)) as big_client:
        response = big_client.post("/v1/embeddings", json={"input": texts}, headers=AUTH)
    assert response.status_code == 200
    assert len(response.content) > 4_500_000
    assert "content-length" not in response.headers
    assert len(response.json()["data"]) == 2048
    small = client.post("/v1/embeddings", json={"input": ["text 1"]}, headers=AUTH)
    assert int(small.headers["content-length"]) == len(small.content)
