"""The fields request bodies share: model ids, numbers as JSON reads them, stop sequences.

Request bodies are `strict`: a value of the wrong JSON type (`"stream": 0`, `"seed": false`)
is a 422, as the schema documents and OpenAI's API answers, not silently coerced.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

from lib.model_ids import MODEL_ID_PATTERN, is_valid_model_id


def _check_model_id(value: str) -> str:
    if not is_valid_model_id(value):
        raise ValueError("not a Hub model id (no '..' or '--', not ending in .git)")
    return value


# The documented pattern also states the rules `is_valid_model_id` adds (no `--` or `..`, no
# `.git` ending), so what the schema allows is what the routes accept. Lookaheads are valid
# in JSON Schema's (ECMA-262) regex dialect; pydantic's own check stays `MODEL_ID_PATTERN`.
MODEL_ID_SCHEMA_PATTERN = r"^(?!.*(?:--|\.\.))(?![^:]*\.git(?::|$))" + MODEL_ID_PATTERN[1:]

ModelId = Annotated[
    str,
    AfterValidator(_check_model_id),
    WithJsonSchema({"type": "string", "maxLength": 200, "pattern": MODEL_ID_SCHEMA_PATTERN}),
]


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON has one kind of number: `512.0` is the integer 512, as JSON Schema reads it. (Bounds
# go before the validator, or pydantic leaves them out of the JSON schema.)
JsonInt = Annotated[int, BeforeValidator(_whole_number)]


def _number_as_sent(value: Any, validate: ValidatorFunctionWrapHandler) -> Any:
    validate(value)
    return value


# A number checked as one but forwarded as the caller wrote it: `0` reaches the upstream as
# `0`, not `0.0` (some servers type their fields as integers or compare the text).
Temperature = Annotated[float, Field(ge=0, le=2), WrapValidator(_number_as_sent)]
TopP = Annotated[float, Field(ge=0, le=1), WrapValidator(_number_as_sent)]
MaxTokens = Annotated[int, Field(ge=1, le=131_072), BeforeValidator(_whole_number)]
Dimensions = Annotated[int, Field(ge=1, le=16_384), BeforeValidator(_whole_number)]
PositiveCount = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]


def _check_stop(value: str | list[str]) -> str | list[str]:
    if isinstance(value, list) and len(value) > 4:
        raise ValueError("at most 4 stop sequences")
    return value


# One stop sequence, or up to 4 (OpenAI's limit): the bound is on the list, not on a
# string's length. One validator, so that an error names `stop`, not a union member.
StopSequences = Annotated[
    str | list[str],
    AfterValidator(_check_stop),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        }
    ),
]

# A model in a task route's path: the same rules, without a provider suffix.
TASK_MODEL_SCHEMA_PATTERN = r"^(?!.*:)" + MODEL_ID_SCHEMA_PATTERN[1:]


def _check_plain_model_id(value: str) -> str:
    if ":" in value:
        raise ValueError("a provider suffix (':groq', ':fastest') is not taken here")
    return _check_model_id(value)


# A model for hf-inference's pipelines (embeddings): a Hub id, without a provider suffix.
PlainModelId = Annotated[
    str,
    AfterValidator(_check_plain_model_id),
    WithJsonSchema({"type": "string", "maxLength": 200, "pattern": TASK_MODEL_SCHEMA_PATTERN}),
]

# The request body's `model`: optional, the deployment's default when left out.
MODEL_FIELD = Field(
    default=None,
    max_length=200,
    pattern=MODEL_ID_PATTERN,
    description="A Hub model id, `org/name` with an optional `:provider` suffix. "
    "Omit it to use the deployment's default model.",
)
