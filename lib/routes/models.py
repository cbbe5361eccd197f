"""`GET /v1/models` and `GET /v1/models/{id}`: the models this deployment serves."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from lib.errors import NotFoundError
from lib.model_ids import is_model_allowed, is_valid_model_id
from lib.routes.gate import gated_router, services
from lib.schemas import ModelCard, ModelList
from lib.settings import Settings

models_router = gated_router()


@models_router.get("/v1/models", tags=["OpenAI-compatible"], summary="List the allowed models")
async def list_models(request: Request) -> ModelList:
    """The models this deployment serves; with `ALLOWED_MODELS=*`, the two defaults."""
    settings = services(request).settings
    tasks = _default_tasks(settings)
    ids = [m for m in tasks if is_model_allowed(m, settings.allowed_models)]
    ids += [m for m in settings.allowed_models if m != "*" and m not in tasks]
    return ModelList(data=[_model_card(m, tasks) for m in ids])


@models_router.get(
    "/v1/models/{model:path}", tags=["OpenAI-compatible"], summary="Describe an allowed model"
)
async def retrieve_model(
    model: Annotated[str, Path(description="A model id, `org/name[:provider]`.")],
    request: Request,
) -> ModelCard:
    """One model of this deployment (the SDKs' `models.retrieve`); 404 for any other."""
    settings = services(request).settings
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
