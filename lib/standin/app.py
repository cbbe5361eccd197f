"""The stand-in router app: its routes, each answering as the router (or, with
`api="openai"`, an OpenAI-compatible server) would, after the refusals a `Fault` scripts."""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lib.standin.chat import answer_chat, last_user_text
from lib.standin.embeddings import feature_vectors, openai_embeddings
from lib.standin.responses import answer_response, responses_input_text
from lib.standin.state import (
    Fault,
    StandinState,
    error_response,
    fault_from_tag,
    record,
    reset_body,
    wait_unless_gone,
)
from lib.standin.tasks import guess_task, task_answer


def create_standin_app(state: StandinState | None = None) -> Starlette:
    """Build the stand-in router app; pass a `StandinState` to inspect what it received."""
    state = state or StandinState()

    async def refusal(
        request: Request, body: Any, model: str, fault: Fault | None
    ) -> Response | None:
        """What the router would answer instead, if anything: bad token, unknown model, a fault."""
        record(state, request, body)
        if state.token and request.headers.get("authorization") != f"Bearer {state.token}":
            return error_response(401)
        if fault and fault.delay_s and not await wait_unless_gone(request, fault.delay_s):
            state.hangups.append(time.monotonic())
            return Response(status_code=499)
        if fault and fault.body is not None:
            return Response(
                fault.body, fault.status or 200, fault.headers, media_type=fault.content_type
            )
        if fault and fault.status:
            return error_response(fault.status, fault.headers)
        if fault and fault.cut_before_first:
            media_type = "text/event-stream" if body.get("stream") else "application/json"
            return StreamingResponse(reset_body(0), media_type=media_type)
        if fault and fault.reset_after is not None and not body.get("stream"):
            return StreamingResponse(reset_body(fault.reset_after), media_type="application/json")
        if "missing" in model:
            return error_response(404)
        return None

    def next_fault(text: str, model: str) -> Fault | None:
        # A model's own fault stays (a model that is down); a scripted one is used once.
        if (fault := state.model_faults.get(model)) is not None:
            return fault
        return state.faults.pop(0) if state.faults else fault_from_tag(text, state.slow_s)

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        model = body.get("model") or "unknown"
        fault = next_fault(last_user_text(body), model)
        if refused := await refusal(request, body, model, fault):
            return refused
        return answer_chat(state, model, body, fault or Fault())

    async def responses(request: Request) -> Response:
        body = await request.json()
        model = body.get("model") or "unknown"
        fault = next_fault(responses_input_text(body), model)
        if refused := await refusal(request, body, model, fault):
            return refused
        return answer_response(state, model, body, fault or Fault())

    async def feature_extraction(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("inputs")
        text = inputs if isinstance(inputs, str) else ""
        fault = next_fault(text, request.path_params["model"])
        if refused := await refusal(request, body, request.path_params["model"], fault):
            return refused
        vectors = feature_vectors(inputs)
        return error_response(422) if vectors is None else JSONResponse(vectors)

    async def run_task(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("inputs")
        model = request.path_params["model"]
        fault = next_fault(inputs if isinstance(inputs, str) else "", model)
        if refused := await refusal(request, body, model, fault):
            return refused
        task = request.path_params.get("task") or guess_task(model)
        answer = task_answer(task, inputs, body.get("parameters") or {})
        return error_response(422) if answer is None else JSONResponse(answer)

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        model = body.get("model") or "unknown"
        fault = next_fault(texts[0] if isinstance(texts, list) and texts else "", model)
        if refused := await refusal(request, body, model, fault):
            return refused
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return error_response(422)
        return JSONResponse(openai_embeddings(body.get("model"), texts, body))

    async def list_models(request: Request) -> Response:
        record(state, request, None)
        return JSONResponse(
            {"object": "list", "data": [{"id": "HuggingFaceTB/SmolLM3-3B", "object": "model"}]}
        )

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
    if state.api == "openai":
        routes.append(Route("/v1/embeddings", embeddings, methods=["POST"]))
    else:
        routes += [
            Route(
                "/hf-inference/models/{model:path}/pipeline/feature-extraction",
                feature_extraction,
                methods=["POST"],
            ),
            Route("/hf-inference/models/{model:path}/pipeline/{task}", run_task, methods=["POST"]),
            Route("/hf-inference/models/{model:path}", run_task, methods=["POST"]),
        ]
    app = Starlette(routes=routes)
    app.state.standin = state
    return app
