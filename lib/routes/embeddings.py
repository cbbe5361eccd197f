"""`POST /v1/embeddings`: OpenAI's embeddings, from the router's feature extraction or an
OpenAI-compatible server's own route."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from lib import inference
from lib.access import Hop
from lib.routes.answering import try_models
from lib.routes.gate import CallerDep, gated_router, services, start_upstream_call
from lib.schemas import EmbeddingRequest, EmbeddingResponse
from lib.upstream import UpstreamClient, json_response

embeddings_router = gated_router()


@embeddings_router.post(
    "/v1/embeddings",
    tags=["OpenAI-compatible"],
    summary="Create embeddings",
    response_model=EmbeddingResponse,
)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, caller: CallerDep
) -> Response:
    """Embed one text or a list of texts with a feature-extraction model (charged the
    OpenAI-compatible server's token count, or an estimate from the input's text)."""
    shared = services(request)
    settings = shared.settings
    model = inference.resolve_embedding_model(body.model, settings)
    call = await start_upstream_call(request, caller, model)

    async def embed(
        client: UpstreamClient, hop: Hop, texts: EmbeddingRequest = body
    ) -> tuple[EmbeddingResponse, bool]:
        # The second upstream is OpenAI-compatible whatever UPSTREAM_API says of the first.
        openai = settings.upstream_api == "openai" or hop.upstream == "fallback"
        embed = inference.relay_openai_embeddings if openai else inference.create_embeddings
        return await embed(client, texts, call, settings.embedding_batch_size), openai

    if caller.cache is not None and shared.access.cache is not None:
        # A batch half cached sends the rest alone, unless a fallback could answer it.
        alone = len(shared.access.model_chain(model, caller)) == 1
        result = await inference.cached_embeddings(
            body,
            call,
            caller,
            shared.access.cache,
            request.headers.get("cache-control"),
            lambda texts: try_models(
                request, caller, call, lambda client, hop: embed(client, hop, texts)
            ),
            alone=alone,
        )
    else:
        # Every batch of one request goes to one model (the one `call.model` names as it is
        # tried): an answer never mixes two models' vectors.
        result, openai = await try_models(request, caller, call, embed)
        # The router reports no tokens (its usage is a word count): estimate from the input.
        reported = result.usage.model_dump() if openai else None
        await caller.charge(reported, payload={"input": body.input})
    return json_response(
        result.model_dump_json().encode(),
        deadline=call.deadline,
        idle_timeout_s=settings.stream_idle_timeout_s,
    )
