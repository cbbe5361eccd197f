"""The Responses API routes: `POST /v1/responses`, and clear refusals for stored responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from lib import inference
from lib.routes.answering import answer_through_cache, forward_with_fallbacks
from lib.routes.api_document import error_response
from lib.routes.gate import CallerDep, GatedRoute, gated_router, services, start_upstream_call
from lib.schemas import ResponsesRequest

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
_NOT_STORED = {404: error_response("promptgate stores no responses")}


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


responses_router = gated_router(
    prefix="/v1/responses", tags=["OpenAI-compatible"], route_class=SharedPathRoute
)

ResponseId = Annotated[str, Path(max_length=200, description="A response id (`resp_...`).")]


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
    model = inference.resolve_model(body.model, services(request).settings)
    payload = inference.build_responses_payload(body, model)
    caller.cap_completion_tokens(payload, send_as="max_output_tokens")
    call = await start_upstream_call(request, caller, model, stream=body.stream)
    cached = await answer_through_cache(request, caller, call, payload, "response")
    if cached is not None:
        return cached
    if body.stream:
        return await forward_with_fallbacks(
            request, caller, call, payload, inference.stream_response
        )
    reply = await forward_with_fallbacks(request, caller, call, payload, inference.forward_response)
    return Response(reply.content, media_type="application/json")


# The routes that read or change a stored response: (method, path, summary, name, docstring).
# Listed so that the API document shows them, each answering 404 `not_stored`.
_STORED_RESPONSE_ROUTES = (
    (
        "GET",
        "/{response_id}",
        "Retrieve a stored response: none are kept",
        "retrieve_response",
        "keeps no responses",
    ),
    (
        "DELETE",
        "/{response_id}",
        "Delete a stored response: none are kept",
        "delete_response",
        "keeps no responses",
    ),
    (
        "POST",
        "/{response_id}/cancel",
        "Cancel a background response: none are kept",
        "cancel_response",
        "runs no background responses",
    ),
    (
        "GET",
        "/{response_id}/input_items",
        "List a stored response's input items: none are kept",
        "list_input_items",
        "keeps no responses",
    ),
)


async def _refuse_stored_response(response_id: ResponseId) -> Any:
    raise inference.refuse_stored_response(response_id)


for _method, _path, _summary, _name, _what in _STORED_RESPONSE_ROUTES:
    responses_router.add_api_route(
        _path,
        _refuse_stored_response,
        methods=[_method],
        summary=_summary,
        name=_name,
        description=f"Always 404 `not_stored`: promptgate {_what}.",
        responses=_NOT_STORED,
    )
