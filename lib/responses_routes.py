"""The Responses API routes: `POST /v1/responses`, and clear refusals for stored responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from lib import inference, responses
from lib.response_schemas import ResponsesRequest
from lib.routes import (
    ERROR_STATUSES,
    CallerDep,
    GatedRoute,
    Services,
    require_caller,
    start_upstream_call,
)
from lib.schemas import ErrorBody

# The Responses stream is named events: `event: <type>` then `data: {...}`, no `[DONE]`.
_NAMED_SSE_CONTENT = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
            "required": ["data"],
        },
        "example": 'event: response.output_text.delta\ndata: {"type": "response.output_text.delta"'
        ', "sequence_number": 4, "delta": "Hi"}\n\n',
    }
}
_NOT_STORED = {404: {"model": ErrorBody, "description": "promptgate stores no responses"}}


class SharedPathRoute(GatedRoute):
    """A route that shares its path with routes for other methods (GET and DELETE of one id).

    Starlette answers a method no route takes with the `Allow` of the first route that
    matched the path; this one lists the methods of every route on the path instead.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or a 405 whose `Allow` names all of the path's methods."""
        if scope["method"] not in self.methods:
            siblings = [r for r in responses_router.routes if getattr(r, "path", None) == self.path]
            allowed = sorted({m for route in siblings for m in getattr(route, "methods", ())})
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(allowed)})
        await super().handle(scope, receive, send)


responses_router = APIRouter(
    prefix="/v1/responses",
    tags=["OpenAI-compatible"],
    route_class=SharedPathRoute,
    dependencies=[Depends(require_caller)],
    responses={
        status: {"model": ErrorBody, "description": description}
        for status, description in ERROR_STATUSES.items()
    },
)

ResponseId = Annotated[str, Path(max_length=200, description="A response id (`resp_...`).")]


def _services(request: Request) -> Services:
    return request.app.state.services


@responses_router.post(
    "",
    summary="Create a model response (Responses API)",
    response_model=None,
    responses={200: {"content": {"application/json": {}, **_NAMED_SSE_CONTENT}}},
)
async def create_response(body: ResponsesRequest, request: Request, caller: CallerDep) -> Response:
    """Forward an OpenAI Responses API request; `stream: true` relays its named events.

    Nothing is stored: `store` goes upstream as false; `store: true` and
    `previous_response_id` are refused (400), since no response can be read back.
    """
    services = _services(request)
    model = inference.resolve_model(body.model, services.settings)
    payload = responses.build_responses_payload(body, model)
    caller.cap_completion_tokens(payload, field="max_output_tokens")
    call = await start_upstream_call(request, caller, model, stream=body.stream)
    if body.stream:

        async def charge(response: dict[str, Any] | None) -> None:
            await caller.charge(response and response.get("usage"), payload=payload)

        return await responses.stream_response(services.upstream, payload, call, charge)
    reply = await responses.forward_response(services.upstream, payload, call)
    await caller.charge(reply.data.get("usage"), payload=payload)
    return Response(reply.content, media_type="application/json")


@responses_router.get(
    "/{response_id}", summary="Retrieve a stored response: none are kept", responses=_NOT_STORED
)
async def retrieve_response(response_id: ResponseId) -> Any:
    """Always 404 `not_stored`: promptgate keeps no responses."""
    raise responses.refuse_stored_response(response_id)


@responses_router.delete(
    "/{response_id}", summary="Delete a stored response: none are kept", responses=_NOT_STORED
)
async def delete_response(response_id: ResponseId) -> Any:
    """Always 404 `not_stored`: promptgate keeps no responses."""
    raise responses.refuse_stored_response(response_id)


@responses_router.post(
    "/{response_id}/cancel",
    summary="Cancel a background response: none are kept",
    responses=_NOT_STORED,
)
async def cancel_response(response_id: ResponseId) -> Any:
    """Always 404 `not_stored`: promptgate runs no background responses."""
    raise responses.refuse_stored_response(response_id)


@responses_router.get(
    "/{response_id}/input_items",
    summary="List a stored response's input items: none are kept",
    responses=_NOT_STORED,
)
async def list_input_items(response_id: ResponseId) -> Any:
    """Always 404 `not_stored`: promptgate keeps no responses."""
    raise responses.refuse_stored_response(response_id)
