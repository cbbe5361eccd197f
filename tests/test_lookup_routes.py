"""`GET /v1/models/{id}`, the pipeline routes' task check, and the routes that point elsewhere."""

from __future__ import annotations

import json

import pytest
import respx
from fastapi.testclient import TestClient

from lib.routes.tasks import HF_INFERENCE_TASKS
from tests.conftest import AUTH, make_client

ALLOWED = "HuggingFaceTB/SmolLM3-3B,sentence-transformers/all-MiniLM-L6-v2,org/tuned:groq"


@pytest.fixture
def lookup_client(upstream: respx.Router):
    with make_client(upstream, allowed_models=ALLOWED) as client:
        yield client


@pytest.mark.parametrize(
    ("model", "task"),
    [
        ("HuggingFaceTB/SmolLM3-3B", "chat-completion"),
        ("sentence-transformers/all-MiniLM-L6-v2", "feature-extraction"),
        ("org/tuned:groq", None),
    ],
)
def test_an_allowed_model_is_described(
    lookup_client: TestClient, upstream: respx.Router, model: str, task: str | None
) -> None:
    response = lookup_client.get(f"/v1/models/{model}", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": model.split("/")[0],
        "task": task,
    }
    assert not upstream.calls


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B", "org/tuned", "bad..id", "a/b/c"])
def test_any_other_model_is_404_in_the_openai_shape(lookup_client: TestClient, model: str) -> None:
    response = lookup_client.get(f"/v1/models/{model}", headers=AUTH)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error" and error["code"] == "model_not_found"
    assert error["param"] == "model" and "GET /v1/models" in error["message"]


def test_describing_a_model_needs_a_key(lookup_client: TestClient) -> None:
    assert lookup_client.get("/v1/models/HuggingFaceTB/SmolLM3-3B").status_code == 401


def test_the_task_list_is_huggingface_hub_s_list_of_hf_inference_tasks() -> None:
    from huggingface_hub.inference._providers import PROVIDERS

    assert set(HF_INFERENCE_TASKS) == set(PROVIDERS["hf-inference"]) - {"conversational"}


@pytest.mark.parametrize("task", ["sentence-similarity", "fill-mask", "zero-shot-classification"])
def test_a_pipeline_route_forwards_to_that_pipeline(upstream: respx.Router, task: str) -> None:
    model = "sentence-transformers/all-MiniLM-L6-v2"
    route = upstream.post(f"/hf-inference/models/{model}/pipeline/{task}").respond(200, json=[1])
    body = {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"x": 0}}
    with make_client(upstream) as client:
        response = client.post(f"/models/{model}/pipeline/{task}", json=body, headers=AUTH)
    assert response.status_code == 200 and response.json() == [1]
    assert json.loads(route.calls.last.request.content) == body


@pytest.mark.parametrize("task", ["conversational", "text2sql", "Feature-Extraction", "x" * 300])
def test_an_unknown_pipeline_is_404_with_the_list(
    lookup_client: TestClient, upstream: respx.Router, task: str
) -> None:
    response = lookup_client.post(
        f"/models/HuggingFaceTB/SmolLM3-3B/pipeline/{task}", json={"inputs": "x"}, headers=AUTH
    )
    assert response.status_code == 404
    body = response.json()
    assert f"no '{task[:60]}' pipeline" in body["error"] and "sentence-similarity" in body["error"]
    assert body["error_type"] == "not_found_error"
    assert not upstream.calls


def test_a_task_sent_to_the_root_is_told_to_use_a_model_route(lookup_client: TestClient) -> None:
    response = lookup_client.post("/", json={"inputs": "I love it"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "InferenceClient(model='http://testserver/models/<org>/<name>')" in message
    assert response.headers["x-error-message"] == message
    assert lookup_client.get("/").status_code == 200  # the playground is still there


def test_legacy_completions_point_to_chat_completions(
    lookup_client: TestClient, upstream: respx.Router
) -> None:
    response = lookup_client.post(
        "/v1/completions", json={"model": "HuggingFaceTB/SmolLM3-3B", "prompt": "x"}, headers=AUTH
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert "/v1/chat/completions" in error["message"] and error["code"] == "use_chat_completions"
    assert not upstream.calls
