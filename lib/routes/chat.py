"""`POST /v1/chat/completions` and `POST /api/generate`: chat, as OpenAI and as plain text."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from lib import inference
from lib.access import Caller
from lib.routes.answering import answer_through_cache, forward_with_fallbacks
from lib.routes.api_document import SSE_CONTENT
from lib.routes.gate import CallerDep, gated_router, services, start_upstream_call
from lib.schemas import ChatCompletionRequest, GenerateRequest, GenerateResponse

chat_router = gated_router()


@chat_router.post(
    "/v1/chat/completions",
    tags=["OpenAI-compatible"],
    summary="Create a chat completion",
    response_model=None,
    responses={200: {"content": {"application/json": {}, **SSE_CONTENT}}},
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, caller: CallerDep
) -> Response:
    """Forward an OpenAI chat completion; `stream: true` relays the SSE events as they come."""
    model = inference.resolve_model(body.model, services(request).settings)
    return await answer_chat(body, model, request, caller)


async def answer_chat(
    body: ChatCompletionRequest, model: str, request: Request, caller: Caller
) -> Response:
    """Serve a chat completion for `model`, already resolved and allowed (or its fallbacks),
    from the response cache when the caller's answers are cached."""
    payload = inference.build_chat_payload(body, model)
    caller.cap_completion_tokens(payload)
    call = await start_upstream_call(request, caller, model, stream=body.stream)
    cached = await answer_through_cache(request, caller, call, payload, "chat")
    if cached is not None:
        return cached
    if body.stream:
        return await forward_with_fallbacks(request, caller, call, payload, inference.stream_chat)
    reply = await forward_with_fallbacks(request, caller, call, payload, inference.forward_chat)
    return Response(reply.content, media_type="application/json")


@chat_router.post(
    "/api/generate",
    tags=["Simple"],
    summary="Generate text from a prompt",
    response_model=GenerateResponse,
    responses={200: {"content": SSE_CONTENT}},
)
async def generate(
    body: GenerateRequest, request: Request, caller: CallerDep
) -> Response | GenerateResponse:
    """Text in, text out; `stream: true` sends `{"text": delta}` events, then one with the usage."""
    model = inference.resolve_model(body.model, services(request).settings)
    payload = inference.build_generate_payload(body, model)
    caller.cap_completion_tokens(payload)
    call = await start_upstream_call(request, caller, model, stream=body.stream)
    cached = await answer_through_cache(request, caller, call, payload, "generate")
    if cached is not None:
        return cached
    operation = inference.stream_generated_text if body.stream else inference.generate_text
    return await forward_with_fallbacks(request, caller, call, payload, operation)
