"""What the API document says every model route may answer besides its success."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from lib.schemas import ErrorBody

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


def error_responses(body: type[BaseModel] = ErrorBody) -> dict[int | str, dict[str, Any]]:
    """`ERROR_STATUSES` as FastAPI's `responses`, each answered with `body`."""
    return {
        status: {"model": body, "description": description}
        for status, description in ERROR_STATUSES.items()
    }


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
