"""Hugging Face task routes: bodies pass through, only a valid allowed model id reaches the path."""

from __future__ import annotations

import json

import pytest
import respx
from fastapi.testclient import TestClient

from tests.conftest import AUTH, CANARY_KEY, CANARY_TOKEN, chat_completion, make_client

CLASSIFIER = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"


@pytest.fixture
def task_client(upstream: respx.Router):
    with make_client(upstream, allowed_models=f"{CLASSIFIER},HuggingFaceTB/SmolLM3-3B") as client:
        yield client


def test_task_body_passes_through_to_hf_inference(
    task_client: TestClient, upstream: respx.Router
) -> None:
    answer = [[{"label": "POSITIVE", "score": 0.99}, {"label": "NEGATIVE", "score": 0.01}]]
    route = upstream.post(f"/hf-inference/models/{CLASSIFIER}").respond(200, json=answer)
    body = {"inputs": "I love it", "parameters": {"top_k": 2}, "options": {"wait_for_model": True}}
    response = task_client.post(f"/models/{CLASSIFIER}", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == answer
    sent = route.calls.last.request
    assert json.loads(sent.content) == body
    assert sent.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert CANARY_KEY.encode() not in sent.content


def test_feature_extraction_pipeline_route(task_client: TestClient, upstream: respx.Router) -> None:
    model = "sentence-transformers/all-MiniLM-L6-v2"
    path = f"/hf-inference/models/{model}/pipeline/feature-extraction"
    route = upstream.post(path).respond(200, json=[0.1, 0.2])
    with make_client(upstream) as client:
        response = client.post(
            f"/models/{model}/pipeline/feature-extraction",
            json={"inputs": "hi", "normalize": True},
            headers=AUTH,
        )
    assert response.status_code == 200 and response.json() == [0.1, 0.2]
    assert json.loads(route.calls.last.request.content) == {"inputs": "hi", "normalize": True}


def test_chat_under_model_path_uses_that_model(
    task_client: TestClient, upstream: respx.Router
) -> None:
    route = upstream.post("/v1/chat/completions").respond(200, json=chat_completion())
    response = task_client.post(
        "/models/HuggingFaceTB/SmolLM3-3B/v1/chat/completions",
        json={"model": "dummy", "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert json.loads(route.calls.last.request.content)["model"] == "HuggingFaceTB/SmolLM3-3B"


@pytest.mark.parametrize(
    "path",
    [
        "/models/a/b/c",
        "/models/..%2F..%2Fadmin",
        "/models/org--x/y",
        "/models/org/name:groq",
        "/models/org/name.git",
        "/models/https:%2F%2Fevil.example%2Fx",
    ],
)
def test_malformed_model_in_path_is_refused_before_upstream(
    task_client: TestClient, upstream: respx.Router, path: str
) -> None:
    response = task_client.post(path, json={"inputs": "x"}, headers=AUTH)
    assert response.status_code in (404, 422), path
    assert not upstream.calls


def test_model_off_the_allowlist_gets_hf_shaped_403(
    task_client: TestClient, upstream: respx.Router
) -> None:
    response = task_client.post(
        "/models/facebook/bart-large-cnn", json={"inputs": "x"}, headers=AUTH
    )
    assert response.status_code == 403
    body = response.json()
    assert isinstance(body["error"], str) and "not allowed" in body["error"]
    assert response.headers["x-error-message"] == body["error"]
    assert response.headers["x-request-id"]
    assert not upstream.calls


def test_missing_key_on_task_route_says_to_pass_the_proxy_key(task_client: TestClient) -> None:
    response = task_client.post(
        f"/models/{CLASSIFIER}",
        json={"inputs": "x"},
        headers={"Authorization": "Bearer hf_test_canary_users_saved_token"},
    )
    assert response.status_code == 401
    assert "client key" in response.json()["error"]
    assert "hf_test_canary_users_saved_token" not in response.text


def test_stream_on_task_route_is_refused(task_client: TestClient, upstream: respx.Router) -> None:
    response = task_client.post(
        f"/models/{CLASSIFIER}", json={"inputs": "x", "stream": True}, headers=AUTH
    )
    assert response.status_code == 400 and "Streaming" in response.json()["error"]
    assert not upstream.calls


def test_task_route_without_inputs_is_422(task_client: TestClient) -> None:
    response = task_client.post(f"/models/{CLASSIFIER}", json={"text": "x"}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"


def test_unknown_model_upstream_sets_repo_not_found_code(
    task_client: TestClient, upstream: respx.Router
) -> None:
    upstream.post(f"/hf-inference/models/{CLASSIFIER}").respond(404, text="Not Found")
    response = task_client.post(f"/models/{CLASSIFIER}", json={"inputs": "x"}, headers=AUTH)
    assert response.status_code == 404
    assert response.headers["x-error-code"] == "RepoNotFound"
    assert CLASSIFIER in response.json()["error"]


def test_placeholder_model_in_a_task_path_is_not_swapped_for_the_chat_model(
    task_client: TestClient, upstream: respx.Router
) -> None:
    """`dummy` means "the default" only in a chat body; in a path it is just a model name."""
    response = task_client.post("/models/dummy", json={"inputs": "x"}, headers=AUTH)
    assert response.status_code == 403
    assert "'dummy' is not allowed" in response.json()["error"]
    assert not upstream.calls
