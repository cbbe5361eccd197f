"""The HTTP routes. Each one validates, calls an operation in `lib.inference`, and answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lib import __version__, embeddings, inference
from lib.access import AccessControl, Caller
from lib.errors import NotFoundError
from lib.large_json import json_response
from lib.model_ids import is_model_allowed, is_valid_model_id
from lib.request_body import read_json_request
from lib.schemas import (
    ChatCompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    Health,
    KeyPolicy,
    LimitsRemaining,
    LimitsReport,
    ModelCard,
    ModelList,
)
from lib.settings import Settings
from lib.upstream import UpstreamCall, UpstreamClient


@dataclass(frozen=True, slots=True)
class Services:
    """What the routes need, built once by the app factory and kept on `app.state`."""

    settings: Settings
    upstream: UpstreamClient
    access: AccessControl


_bearer = HTTPBearer(
    auto_error=False,
    description="The proxy's client key (one of PROXY_API_KEYS), not a Hugging Face token.",
)

# Every error status an inference route can answer (lib/errors.py), as the API documents them.
ERROR_STATUSES: dict[int, str] = {
    400: "Refused by a rule the schema cannot state, or by the upstream",
    401: "Missing, unknown or expired client key; a refused token (invalid_token, token_expired)",
    402: "The server's Hugging Face account is out of credits",
    403: "Model not allowed on this deployment, key or token; a token where only a key will do",
    404: "Model not found upstream",
    408: "The request body did not arrive within BODY_TIMEOUT_S",
    413: "Request body too large",
    415: "A compressed request body (send JSON uncompressed)",
    422: "Invalid request field, or a body JSON cannot carry",
    429: "The key's rate limit or token budget is spent, or the upstream rate limits",
    502: "Upstream failed, or refused the server's credentials",
    503: "This deployment lacks a setting it needs (HF_TOKEN, PROXY_API_KEYS), or its limit "
    "store or identity provider is unreachable",
    504: "Upstream did not answer within the deadline",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in ERROR_STATUSES.items()
}
# Before OpenAPI 3.2, an event stream's `schema` describes each event: its `data` is a JSON
# object, or `[DONE]` last (chat completions).
SSE_CONTENT = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {"data": {"type": "string"}},
            "required": ["data"],
        },
        "example": "data: {...}\n\n",
    }
}


def _services(request: Request) -> Services:
    return request.app.state.services


async def start_upstream_call(
    request: Request, caller: Caller, model: str, *, stream: bool = False
) -> UpstreamCall:
    """Begin the request's upstream call for `model`, if the caller's key may use it; the
    access log reads what it records."""
    call = UpstreamCall(request_id=request.state.request_id, model=model)
    request.state.upstream_call, request.state.stream = call, stream
    caller.check_model(model)
    return call


class GatedRoute(APIRoute):
    """A route that spends the token: the caller is identified, and a request that may reach
    the upstream (one with a body) admitted against its key's limits, before the body is read.

    FastAPI reads and parses a body before it solves dependencies, so a dependency alone
    would let a stranger without a key, or a key past its limit, make the proxy read (and
    hold) their upload. The body is then decoded strictly (`lib.request_body`), so only
    valid JSON goes upstream.
    """

    # False for a route that never reaches the upstream (minting tokens): not admitted.
    admits_requests = True

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        """FastAPI's handler, behind the key check and the strict JSON decoding."""
        handler = super().get_route_handler()
        has_body = self.body_field is not None
        admits = has_body and self.admits_requests

        async def gated_handler(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            caller = await _services(request).access.identify(authorization)
            request.state.caller, request.state.access = caller, caller.record
            request.state.response_headers = caller.response_headers
            if admits:
                await caller.admit()
            if has_body:
                request = await read_json_request(request)
            return await handler(request)

        return gated_handler


async def require_caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """Who is calling and what they may do; `GatedRoute` has identified them already
    (and refused a missing, unknown or expired key, or a refused token). Declares the bearer
    in the API document."""
    return request.state.caller


CallerDep = Annotated[Caller, Depends(require_caller)]
inference_router = APIRouter(
    route_class=GatedRoute, dependencies=[Depends(require_caller)], responses=ERROR_RESPONSES
)
public_router = APIRouter()


@inference_router.post(
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
    model = inference.resolve_model(body.model, _services(request).settings)
    return await answer_chat(body, model, request, caller)


async def answer_chat(
    body: ChatCompletionRequest, model: str, request: Request, caller: Caller
) -> Response:
    """Serve a chat completion for `model`, already resolved and allowed."""
    upstream = _services(request).upstream
    payload = inference.build_chat_payload(body, model)
    caller.cap_completion_tokens(payload)
    call = await start_upstream_call(request, caller, model, stream=body.stream)
    if body.stream:
        return await inference.stream_chat(upstream, payload, call, caller)
    reply = await inference.forward_chat(upstream, payload, call, caller)
    return Response(reply.content, media_type="application/json")


@inference_router.post(
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
    services = _services(request)
    model = inference.resolve_model(body.model, services.settings)
    payload = inference.build_generate_payload(body, model)
    caller.cap_completion_tokens(payload)
    call = await start_upstream_call(request, caller, model, stream=body.stream)
    if body.stream:
        return await inference.stream_generated_text(services.upstream, payload, call, caller)
    return await inference.generate_text(services.upstream, payload, call, caller)


@inference_router.post(
    "/v1/embeddings",
    tags=["OpenAI-compatible"],
    summary="Create embeddings",
    response_model=EmbeddingResponse,
)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, caller: CallerDep
) -> Response:
    """Embed one text or a list of texts with a feature-extraction model (counted as a request;
    the upstream reports no tokens)."""
    services = _services(request)
    model = inference.resolve_embedding_model(body.model, services.settings)
    call = await start_upstream_call(request, caller, model)
    if services.settings.upstream_api == "openai":
        embed = embeddings.relay_openai_embeddings
    else:
        embed = embeddings.create_embeddings
    result = await embed(services.upstream, body, call, services.settings.embedding_batch_size)
    return json_response(result.model_dump_json().encode())


@inference_router.get("/v1/models", tags=["OpenAI-compatible"], summary="List the allowed models")
async def list_models(request: Request) -> ModelList:
    """The models this deployment serves; with `ALLOWED_MODELS=*`, the two defaults."""
    settings = _services(request).settings
    tasks = _default_tasks(settings)
    ids = [m for m in tasks if is_model_allowed(m, settings.allowed_models)]
    ids += [m for m in settings.allowed_models if m != "*" and m not in tasks]
    return ModelList(data=[_model_card(m, tasks) for m in ids])


@inference_router.get(
    "/v1/models/{model:path}", tags=["OpenAI-compatible"], summary="Describe an allowed model"
)
async def retrieve_model(
    model: Annotated[str, Path(description="A model id, `org/name[:provider]`.")],
    request: Request,
) -> ModelCard:
    """One model of this deployment (the SDKs' `models.retrieve`); 404 for any other."""
    settings = _services(request).settings
    if not is_valid_model_id(model) or not is_model_allowed(model, settings.allowed_models):
        raise NotFoundError(
            f"The model '{model[:100]}' does not exist on this deployment; "
            "GET /v1/models lists the models it serves.",
            param="model",
            code="model_not_found",
        )
    return _model_card(model, _default_tasks(settings))


def _default_tasks(settings: Settings) -> dict[str, str]:
    return {
        settings.default_model: "chat-completion",
        settings.embedding_model: "feature-extraction",
    }


def _model_card(model: str, tasks: dict[str, str]) -> ModelCard:
    owner = model.split("/")[0] if "/" in model else "huggingface"
    return ModelCard(id=model, owned_by=owner, task=tasks.get(model))


@inference_router.get("/api/limits", tags=["Service"], summary="The caller's limits")
async def limits(request: Request, caller: CallerDep) -> LimitsReport:
    """The caller's key name, its policy, and what it has left this minute and today; for a
    token's holder, the token's user, their own limits and what they have left."""
    limiter = _services(request).access.limiter
    counted = caller.user or caller.key
    remaining = await limiter.remaining(counted)
    policy = counted.policy
    return LimitsReport(
        key=caller.name,
        user=counted.user,
        policy=KeyPolicy(
            rpm=policy.rpm,
            tpm=policy.tpm,
            daily_tokens=policy.daily_tokens,
            max_tokens=policy.max_tokens,
            models=list(policy.models) if policy.models is not None else None,
            expires=policy.expires.isoformat() if policy.expires else None,
        ),
        remaining=LimitsRemaining(**dataclasses.asdict(remaining)),
        limits_store=limiter.store_kind,
    )


@public_router.get("/api/health", tags=["Service"], summary="Health and configuration")
async def health(request: Request) -> Health:
    """Needs no key and calls nothing upstream; reports configuration as booleans only, and
    whether the limit store answers (bounded: a fraction of a second)."""
    services = _services(request)
    access = services.access
    return Health(
        version=__version__,
        token_configured=services.settings.hf_token is not None,
        keys_configured=access.keys.configured,
        anonymous_allowed=access.keys.allow_anonymous,
        limits_store=access.limiter.store_kind,
        limits_store_reachable=await access.limiter.store_answers(),
    )
