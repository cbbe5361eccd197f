"""Hugging Face task routes: `InferenceClient(model="<proxy>/models/<org>/<name>")` works as-is.

Bodies pass through as JSON to the hf-inference provider; only the model id, validated
and allowlisted, reaches the upstream path. Errors on these routes take the shape the
Hugging Face client reads (`{"error": "..."}` and `X-Error-Message`), set by the app factory.
With `UPSTREAM_API=openai` the task routes answer 404 (only the router has hf-inference);
a model's chat route still works, since it is plain chat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.responses import Response

from lib import inference
from lib.errors import NotFoundError
from lib.routes.api_document import SSE_CONTENT, error_responses
from lib.routes.chat import answer_chat
from lib.routes.gate import CallerDep, gated_router, services, start_upstream_call
from lib.schemas import (
    TASK_MODEL_SCHEMA_PATTERN,
    ChatCompletionRequest,
    TaskErrorBody,
    TaskRequest,
)
from lib.upstream import json_response

TASK_ROUTE_PREFIX = "/models/"

# The pipelines the router serves on hf-inference, `/models/{m}/pipeline/{task}`: the
# hf-inference tasks huggingface_hub knows (`inference/_providers/__init__.py`), less
# `conversational`, which is `/v1/chat/completions` (tests/test_routes_tasks.py compares).
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


task_router = gated_router(
    prefix="/models", tags=["Hugging Face tasks"], responses=error_responses(TaskErrorBody)
)


async def require_hf_router(request: Request) -> None:
    """Refuse a task route when the upstream is not Hugging Face's router."""
    if services(request).settings.upstream_api != "hf-router":
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
            model,
            lambda m: inference.pipeline_path(m, task),
            body,
            request,
            caller,
            generates=task == "text-generation",
        )
    resolved = inference.resolve_task_model(model, services(request).settings)
    payload = inference.build_task_payload(body)
    call = await start_upstream_call(request, caller, resolved)
    content = await inference.extract_features(
        services(request).upstream, payload, call, services(request).settings.embedding_batch_size
    )
    await caller.charge(None, payload=payload)  # an estimate from the input's text
    idle_s = services(request).settings.stream_idle_timeout_s
    return json_response(content, deadline=call.deadline, idle_timeout_s=idle_s)


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
    resolved = inference.resolve_task_model(model, services(request).settings)
    return await answer_chat(body, resolved, request, caller)


@task_router.post(
    "/{model:path}",
    summary="Run the model's task on hf-inference",
    dependencies=[Depends(require_hf_router)],
)
async def run_task(
    model: TaskModel, body: TaskRequest, request: Request, caller: CallerDep
) -> Response:
    """Forward any task body (classification, summarization, generation, ...) as JSON.

    The task is the model's, unknown here: with a `max_tokens` cap, a text input is sent with
    `parameters.max_new_tokens` (which other tasks ignore) so that a generation is held to it.
    """
    generates = isinstance(body.inputs, str)
    return await _forward(model, inference.task_path, body, request, caller, generates=generates)


async def _forward(
    model: str,
    path_of: Callable[[str], str],
    body: TaskRequest,
    request: Request,
    caller: CallerDep,
    *,
    generates: bool,
) -> Response:
    resolved = inference.resolve_task_model(model, services(request).settings)
    payload = inference.build_task_payload(body)
    inference.cap_task_generation(payload, caller, generates=generates)
    call = await start_upstream_call(request, caller, resolved)
    upstream = services(request).upstream
    reply = await inference.run_task(upstream, path_of(resolved), payload, call, caller)
    return Response(reply.content, media_type="application/json")
