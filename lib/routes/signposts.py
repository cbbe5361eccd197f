"""Routes clients call that promptgate does not serve, each answering where to go instead.

They read no body, call nothing upstream and need no key: a 404 whose message names the
route to use is all they are for. They are left out of the API document.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from lib.errors import NotFoundError

signpost_router = APIRouter(include_in_schema=False)


@signpost_router.post("/")
async def point_task_clients_to_model_routes(request: Request) -> None:
    """What `InferenceClient(base_url=<proxy>)` sends for a task other than chat."""
    models = f"{str(request.base_url).rstrip('/')}/models"
    raise NotFoundError(
        "Hugging Face tasks are served at /models/<org>/<name>, not at the root: use "
        f"InferenceClient(model='{models}/<org>/<name>'). InferenceClient(base_url=...) "
        "serves chat_completion only.",
        code="use_model_route",
    )


@signpost_router.post("/v1/completions")
async def point_completions_to_chat(request: Request) -> None:
    """The legacy completions API, which the router no longer offers for these models."""
    raise NotFoundError(
        "The legacy completions API (/v1/completions) is not served here; use "
        'POST /v1/chat/completions with messages=[{"role": "user", "content": <prompt>}], '
        "or POST /api/generate with a prompt.",
        code="use_chat_completions",
    )
