"""Which model a request goes to: the one asked for if this deployment allows it, else the
default; and the stricter rule for models named in a task route's path."""

from __future__ import annotations

from lib.errors import InvalidFieldError, ModelNotAllowedError
from lib.model_ids import PLACEHOLDER_MODEL, is_model_allowed, is_valid_model_id
from lib.settings import Settings


def resolve_model(requested: str | None, settings: Settings, default: str | None = None) -> str:
    """The model to call: the requested one if allowed, `default` (the chat model) if none."""
    if requested is None or requested == PLACEHOLDER_MODEL:
        return default or settings.default_model
    return _allowed(requested, settings)


def resolve_embedding_model(requested: str | None, settings: Settings) -> str:
    """The feature-extraction model: the requested one, a plain allowed Hub id, or the default."""
    if requested is None or requested == PLACEHOLDER_MODEL:
        return settings.embedding_model
    return resolve_task_model(requested, settings)


def resolve_task_model(model: str, settings: Settings) -> str:
    """A model named in a task route's path: a plain Hub id (no provider suffix), allowed."""
    if not is_valid_model_id(model) or ":" in model:
        raise InvalidFieldError(
            f"'{model[:100]}' is not a Hub model id such as org/name (no provider suffix here).",
            param="model",
        )
    return _allowed(model, settings)


def _allowed(model: str, settings: Settings) -> str:
    if not is_model_allowed(model, settings.allowed_models):
        allowed = ", ".join(settings.allowed_models)
        raise ModelNotAllowedError(
            f"The model '{model}' is not allowed on this deployment. Allowed: {allowed}.",
            param="model",
        )
    return model
