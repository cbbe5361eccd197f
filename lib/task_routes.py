"""Hugging Face task routes: `InferenceClient(model="<proxy>/models/<org>/<name>")` works as-is.

Bodies pass through as JSON to the hf-inference provider; only the model id, validated
and allowlisted, reaches the upstream path. Errors on these routes take the shape the
Hugging Face client reads (`{"error": "..."}` and `X-Error-Message`), set by the app factory.
With `UPSTREAM_API=openai` the task routes answer 404 (only the router has hf-inference);
a model's chat route still works, since it is plain chat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from lib import embeddings, inference
from lib.errors import NotFoundError
from lib.large_json import json_response
from lib.routes import (
    ERROR_STATUSES,
    SSE_CONTENT,
    CallerDep,
    GatedRoute,
    answer_chat,
    require_caller,
    start_upstream_call,
)
from lib.schemas import TASK_MODEL_SCHEMA_PATTERN, ChatCompletionRequest, TaskErrorBody

TASK_ROUTE_PREFIX = "/models/"

# The pipelines the router serves on hf-inference, `/models/{m}/pipeline/{task}`: the
# hf-inference tasks huggingface_hub knows (`inference/_providers/__init__.py`), less
# `conversational`, which is `/v1/chat/completions` (tests/test_task_routes.py compares).
HF_INFERENCE_TASKS = (
    "audio-classification",
    "audio-to-audio",
    "automatic-speech-recognition",
    "document-question-answering",
    "feature-extraction",
    "fill-mask",
    "image-classification",
    "image-segmentation",
    "image-to-image",
    "image-to-text",
    "object-detection",
    "question-answering",
    "sentence-similarity",
    "summarization",
    "table-question-answering",
    "tabular-classification",
    "text-classification",
    "text-generation",
    "text-to-image",
    "text-to-speech",
    "token-classification",
    "translation",
    "visual-question-answering",
    "zero-shot-classification",
    "zero-shot-image-classification",
)

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
    dependencies=[Depends(require_caller)],
    tags=["Hugging Face tasks"],
    responses={
        status: {"model": TaskErrorBody, "description": description}
        for status, description in ERROR_STATUSES.items()
    },
)


async def require_hf_router(request: Request) -> None:
    """Refuse a task route when the upstream is not Hugging Face's router."""
    if request.app.state.services.settings.upstream_api != "hf-router":
        raise NotFoundError(
            "Hugging Face task routes need Hugging Face's router (UPSTREAM_API=hf-router); "
            "this deployment forwards to an OpenAI-compatible server. "
            "Use /v1/chat/completions or /v1/embeddings.",
            code="needs_hf_router",
        )


TaskName = Annotated[
    str,
    Path(
        description="An hf-inference pipeline, such as `feature-extraction` or "
        "`sentence-similarity`; another name gets 404 with the list.",
        json_schema_extra={"enum": list(HF_INFERENCE_TASKS)},
    ),
]


@task_router.post(
    "/{model:path}/pipeline/{task}",
    summary="Run one of the model's pipelines",
    dependencies=[Depends(require_hf_router)],
)
async def run_pipeline(
    model: TaskModel, task: TaskName, body: TaskRequest, request: Request, caller: CallerDep
) -> Response:
    """Forward to the model's `task` pipeline; `feature-extraction` splits long input lists."""
    if task not in HF_INFERENCE_TASKS:
        raise NotFoundError(
            f"hf-inference has no '{task[:60]}' pipeline. Pipelines: "
            f"{', '.join(HF_INFERENCE_TASKS)}.",
            param="task",
            code="unknown_task",
        )
    if task != "feature-extraction":
        return await _forward(
            model, lambda m: inference.pipeline_path(m, task), body, request, caller
        )
    services = request.app.state.services
    resolved = inference.resolve_task_model(model, services.settings)
    call = await start_upstream_call(request, caller, resolved)
    content = await embeddings.extract_features(
        services.upstream,
        inference.build_task_payload(body),
        call,
        services.settings.embedding_batch_size,
    )
    return json_response(content)


@task_router.post(
    "/{model:path}/v1/chat/completions",
    summary="Chat completion for the model in the path",
    response_model=None,
    responses={200: {"content": {"application/json": {}, **SSE_CONTENT}}},
)
async def create_model_chat_completion(
    model: TaskModel, body: ChatCompletionRequest, request: Request, caller: CallerDep
) -> Response:
    """What `InferenceClient(model="<proxy>/models/<org>/<name>").chat_completion()` calls."""
    resolved = inference.resolve_task_model(model, request.app.state.services.settings)
    return await answer_chat(body, resolved, request, caller)


@task_router.post(
    "/{model:path}",
    summary="Run the model's task on hf-inference",
    dependencies=[Depends(require_hf_router)],
)
async def run_task(
    model: TaskModel, body: TaskRequest, request: Request, caller: CallerDep
) -> Response:
    """Forward any task body (classification, summarization, generation, ...) as JSON."""
    return await _forward(model, inference.task_path, body, request, caller)


async def _forward(
    model: str,
    path_of: Callable[[str], str],
    body: TaskRequest,
    request: Request,
    caller: CallerDep,
) -> Response:
    # Task answers report no tokens: these routes count requests only.
    services = request.app.state.services
    resolved = inference.resolve_task_model(model, services.settings)
    payload = inference.build_task_payload(body)
    call = await start_upstream_call(request, caller, resolved)
    reply = await services.upstream.post_json(path_of(resolved), payload, call)
    return Response(reply.content, media_type="application/json")
