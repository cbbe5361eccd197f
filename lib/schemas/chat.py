"""Chat bodies: `/v1/chat/completions` and `/api/generate`, requests and answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from lib.schemas.fields import (
    MODEL_FIELD,
    JsonInt,
    MaxTokens,
    ModelId,
    StopSequences,
    Temperature,
    TopP,
)

# The content rule, for the API document: what `ChatMessage` checks, in JSON Schema.
_NOT_NULL = {"not": {"type": "null"}}
_CONTENT_RULE: dict[str, Any] = {
    "if": {"properties": {"role": {"const": "assistant"}}, "required": ["role"]},
    "then": {
        "anyOf": [
            {"required": ["content"], "properties": {"content": _NOT_NULL}},
            {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array"}}},
            {"required": ["function_call"], "properties": {"function_call": {"type": "object"}}},
        ]
    },
    "else": {"required": ["content"], "properties": {"content": _NOT_NULL}},
}


class ChatMessage(BaseModel):
    """One message of a conversation; extra OpenAI fields (name, tool_calls, ...) pass through.

    `content` is required, except on an assistant message that carries `tool_calls` (or the
    legacy `function_call`).
    """

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_CONTENT_RULE)

    # `function`: the legacy form of `tool`, which older clients still send.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _content_unless_tool_calls(self) -> ChatMessage:
        if self.content is None:
            extra = self.model_extra or {}
            calls = isinstance(extra.get("tool_calls"), list) or isinstance(
                extra.get("function_call"), dict
            )
            if self.role != "assistant" or not calls:
                raise ValueError(
                    f"a {self.role} message needs 'content' (only an assistant message "
                    "carrying 'tool_calls' may leave it out)"
                )
        return self


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: ask for a last chunk that carries token usage."""

    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completion request. Fields not listed here are forwarded unchanged."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "messages": [{"role": "user", "content": "Say hello in five words."}],
                    "max_tokens": 64,
                    "stream": False,
                }
            ]
        },
    )

    model: ModelId | None = MODEL_FIELD
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: StopSequences | None = None
    seed: JsonInt | None = None


class GenerateRequest(BaseModel):
    """The simple form: a prompt in, text out."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"prompt": "Write a haiku about proxies.", "max_tokens": 64}]
        },
    )

    prompt: str = Field(min_length=1, max_length=200_000)
    model: ModelId | None = MODEL_FIELD
    system: str | None = Field(default=None, max_length=50_000)
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    stream: bool = False


class Usage(BaseModel):
    """Token counts, as the upstream reported them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class GenerateResponse(BaseModel):
    """The answer to `/api/generate`."""

    model: str
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
