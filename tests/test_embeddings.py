"""`/v1/embeddings`: OpenAI's shape, served by the hf-inference feature-extraction pipeline."""

from __future__ import annotations

import base64
import json
import struct

import pytest
import respx
from fastapi.testclient import TestClient

from lib.errors import UpstreamError
from lib.inference import sentence_vectors
from tests.conftest import AUTH, CANARY_TOKEN, make_client

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PIPELINE = f"/hf-inference/models/{EMBEDDING_MODEL}/pipeline/feature-extraction"


def test_embeddings_forward_inputs_and_return_openai_list(
    client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post(PIPELINE).respond(200, json=[[0.5, -0.25, 1.0], [0.0, 1.5, -2.0]])
    response = client.post(
        "/v1/embeddings", json={"input": ["first text", "second one here"]}, headers=AUTH
    )
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.5, -2.0]},
        ],
        "model": EMBEDDING_MODEL,
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    sent = route.calls.last.request
    assert json.loads(sent.content) == {"inputs": ["first text", "second one here"]}
    assert sent.headers["authorization"] == f"Bearer {CANARY_TOKEN}"


def test_embeddings_base64_is_little_endian_float32(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(PIPELINE).respond(200, json=[0.5, -0.25, 1.0])
    response = client.post(
        "/v1/embeddings", json={"input": "one", "encoding_format": "base64"}, headers=AUTH
    )
    encoded = response.json()["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(encoded)) == (0.5, -0.25, 1.0)


def test_embeddings_dimensions_must_match_the_model(
    client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(PIPELINE).respond(200, json=[[0.1, 0.2, 0.3]])
    ok = client.post("/v1/embeddings", json={"input": ["x"], "dimensions": 3}, headers=AUTH)
    assert ok.status_code == 200
    refused = client.post("/v1/embeddings", json={"input": ["x"], "dimensions": 2}, headers=AUTH)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "dimensions" and "returns 3 dimensions" in error["message"]


def test_embeddings_model_must_be_allowed(client: TestClient, upstream: respx.Router) -> None:
    response = client.post(
        "/v1/embeddings", json={"input": "x", "model": "BAAI/bge-large-en-v1.5"}, headers=AUTH
    )
    assert response.status_code == 403
    assert not upstream.calls


def test_embeddings_with_other_allowed_model_use_its_pipeline(upstream: respx.Router) -> None:
    route = upstream.post("/hf-inference/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction")
    route.respond(200, json=[[1.0, 2.0]])
    with make_client(upstream, allowed_models="*") as client:
        response = client.post(
            "/v1/embeddings", json={"input": "x", "model": "BAAI/bge-small-en-v1.5"}, headers=AUTH
        )
    assert response.status_code == 200 and route.called


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [1, 2, 3]}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({}, "input"),
    ],
)
def test_embeddings_bad_fields_return_422(client: TestClient, body: dict, param: str) -> None:
    response = client.post("/v1/embeddings", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["param"].startswith(param)


def test_sentence_vectors_mean_pools_token_level_answers() -> None:
    tokens = [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]]
    assert sentence_vectors(tokens, 2) == [[2.0, 3.0], [2.0, 2.0]]


@pytest.mark.parametrize(
    "data",
    [{"a": 1}, [[1.0], [1.0, 2.0]], [["x"]], [[1.0]], [[True, False]], [], "nope"],
)
def test_sentence_vectors_refuses_shapes_it_cannot_read(data: object) -> None:
    with pytest.raises(UpstreamError):
        sentence_vectors(data, 2)
