"""What the API document says every model route may answer besides its success."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import Schema
from pydantic import BaseModel

from lib.schemas import ErrorBody, TaskErrorBody

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


_SCHEMAS = "#/components/schemas/"
# The error bodies the routes' `responses` name; `document_error_bodies` puts them in the document.
_ERROR_BODIES: tuple[type[BaseModel], ...] = (ErrorBody, TaskErrorBody)


def error_responses(body: type[BaseModel] = ErrorBody) -> dict[int | str, dict[str, Any]]:
    """`ERROR_STATUSES` as FastAPI's `responses`, each answered with `body`.

    The body is named by reference, not given as a `model`: FastAPI builds a validator and
    serializer for each `model` of each route at import (13 per route, a third of the
    routes' import time) that only the API document reads; `document_error_bodies` documents it.
    """
    return {
        status: error_response(description, body) for status, description in ERROR_STATUSES.items()
    }


def error_response(description: str, body: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    """One entry of FastAPI's `responses`: an error answered with `body`, by reference."""
    assert body in _ERROR_BODIES, f"{body.__name__} is not in _ERROR_BODIES"
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _SCHEMAS + body.__name__}}},
    }


def document_error_bodies(app: FastAPI) -> None:
    """Make `app`'s API document (built on the first `/openapi.json`) hold the error bodies'
    schemas, which `error_responses` refers to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_error_bodies(FastAPI.openapi(app))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _add_error_bodies(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for body in _ERROR_BODIES:
        schema = body.model_json_schema(ref_template=_SCHEMAS + "{model}", mode="serialization")
        found = {**schema.pop("$defs", {}), body.__name__: schema}
        # Encoded as FastAPI encodes every schema of the document: same keys, same order.
        for name, found_schema in found.items():
            encoded = jsonable_encoder(Schema(**found_schema), by_alias=True, exclude_none=True)
            schemas[name] = encoded
    document["components"]["schemas"] = dict(sorted(schemas.items()))


ERROR_RESPONSES = error_responses()
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
