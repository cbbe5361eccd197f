"""The Responses API request body (`POST /v1/responses`), as the API documents and checks it.

What promptgate relies on is validated (the model, `input`, `stream`, the numbers); every
other field of OpenAI's Responses API passes through unchanged for the router to judge.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from lib.schemas.fields import MODEL_FIELD, MaxTokens, ModelId, Temperature, TopP

MAX_INPUT_ITEMS = 2048


def _check_input(value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            raise ValueError("must not be an empty text")
        return value
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        if len(value) > MAX_INPUT_ITEMS:
            raise ValueError(f"at most {MAX_INPUT_ITEMS} input items")
        return value
    raise ValueError("must be a text, or a non-empty list of input items (objects)")


# One validator for both forms, so that an error names `input` and the rule, not a union
# member. Items (messages, function calls, function call outputs) are the router's to check.
ResponseInput = Annotated[
    Any,
    AfterValidator(_check_input),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "items": {"type": "object"},
                    "minItems": 1,
                    "maxItems": MAX_INPUT_ITEMS,
                },
            ],
            "description": "A text, or a list of input items (messages, function call outputs).",
        }
    ),
]


class ResponsesRequest(BaseModel):
    """An OpenAI Responses API request. Fields not listed here are forwarded unchanged.

    promptgate keeps nothing: `store` is sent upstream as false, and `store: true`,
    `previous_response_id`, `conversation` and `background` (which need a stored
    response) are refused by the operation with a 400 that says so.
    """

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [
                {"input": "Say hello in five words.", "max_output_tokens": 64, "stream": False}
            ]
        },
    )

    model: ModelId | None = MODEL_FIELD
    input: ResponseInput
    instructions: str | None = Field(default=None, max_length=200_000)
    stream: bool = False
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    store: bool | None = Field(
        default=None, description="Must be false or omitted: promptgate stores no responses."
    )
    previous_response_id: str | None = Field(
        default=None, description="Not supported: send the whole conversation in `input`."
    )
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
