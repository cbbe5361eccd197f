"""Hugging Face task routes: `InferenceClient(model="<proxy>/models/<org>/<name>")` works as-is.

Bodies pass through as JSON to the hf-inference provider; only the model id, validated
and allowlisted, reaches the upstream path. Errors on these routes take the shape the
Hugging Face client reads (`{"error": "..."}` and `X-Error-Message`), set by the app factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from lib import inference
from lib.embeddings import feature_extraction_path
from lib.routes import (
    ERROR_STATUSES,
    SSE_CONTENT,
    GatedRoute,
    answer_chat,
    require_client_key,
    start_upstream_call,
)
from lib.schemas import TASK_MODEL_SCHEMA_PATTERN, ChatCompletionRequest, TaskErrorBody

TASK_ROUTE_PREFIX = "/models/"

# Documented only: `resolve_task_model` checks the id (with the rules pydantic's regex lacks).
TaskModel = Annotated[
    str,
    Path(
        description="A Hub model id, `org/name`, without a provider suffix.",
        json_schema_extra={"pattern": TASK_MODEL_SCHEMA_PATTERN},
    ),
]


class TaskRequest(BaseModel):
    """Any hf-inference task body: `inputs`, optional `parameters`, and task-specific fields."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [{"inputs": "I love this proxy!", "parameters": {"top_k": 2}}]
        },
    )

    inputs: Any = Field(description="The task's input: a text, a list of texts, or an object.")
    parameters: dict[str, Any] | None = None
    stream: bool = False


task_router = APIRouter(
    prefix="/models",
    route_class=GatedRoute,
    dependencies=[Depends(require_client_key)],
    tags=["Hugging Face tasks"],
    responses={
        status: {"model": TaskErrorBody, "description": description}
        for status, description in ERROR_STATUSES.items()
    },
)


@task_router.post(
    "/{model:path}/pipeline/feature-extraction",
    summary="Feature extraction (embeddings) on hf-inference",
)
async def run_feature_extraction(model: TaskModel, body: TaskRequest, request: Request) -> Response:
    """Forward to the model's feature-extraction pipeline; the answer passes through."""
    return await _forward(model, feature_extraction_path, body, request)


@task_router.post(
    "/{model:path}/v1/chat/completions",
    summary="Chat completion for the model in the path",
    response_model=None,
    responses={200: {"content": {"application/json": {}, **SSE_CONTENT}}},
)
async def create_model_chat_completion(
    model: TaskModel, body: ChatCompletionRequest, request: Request
) -> Response:
    """What `InferenceClient(model="<proxy>/models/<org>/<name>").chat_completion()` calls."""
    resolved = inference.resolve_task_model(model, request.app.state.services.settings)
    return await answer_chat(body, resolved, request)


@task_router.post("/{model:path}", summary="Run the model's task on hf-inference")
async def run_task(model: TaskModel, body: TaskRequest, request: Request) -> Response:
    """Forward any task body (classification, summarization, generation, ...) as JSON."""
    return await _forward(model, inference.task_path, body, request)


async def _forward(
    model: str, path_of: Callable[[str], str], body: TaskRequest, request: Request
) -> Response:
    services = request.app.state.services
    resolved = inference.resolve_task_model(model, services.settings)
    call = start_upstream_call(request, resolved)
    payload = inference.build_task_payload(body)
    reply = await services.upstream.post_json(path_of(resolved), payload, call)
    return Response(reply.content, media_type="application/json")
