"""Request and response bodies, as the API documents and validates them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
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

_MODEL_FIELD = Field(
    default=None,
    max_length=200,
    pattern=MODEL_ID_PATTERN,
    description="A Hub model id, `org/name` with an optional `:provider` suffix. "
    "Omit it to use the deployment's default model.",
)


# Request bodies are `strict`: a value of the wrong JSON type (`"stream": 0`, `"seed": false`)
# is a 422, as the schema documents and OpenAI's API answers, not silently coerced.


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

    model: ModelId | None = _MODEL_FIELD
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
    model: ModelId | None = _MODEL_FIELD
    system: str | None = Field(default=None, max_length=50_000)
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    stream: bool = False


# Inputs per request: the most the OpenAI API and the AI SDK's embedMany send at once (2,048;
# LangChain sends 1,000). They reach the upstream in smaller batches (EMBEDDING_BATCH_SIZE).
MAX_EMBEDDING_INPUTS = 2048
# About OpenAI's limit of 8,192 tokens per input, in characters of English text.
MAX_EMBEDDING_INPUT_CHARS = 32_768
EmbeddingText = Annotated[str, Field(max_length=MAX_EMBEDDING_INPUT_CHARS)]


class EmbeddingRequest(BaseModel):
    """An OpenAI embeddings request, served by Hugging Face's feature-extraction pipeline."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [{"input": ["The first sentence.", "The second one."]}],
        },
    )

    input: (
        EmbeddingText
        | Annotated[list[EmbeddingText], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    ) = Field(
        description=f"A text, or a list of up to {MAX_EMBEDDING_INPUTS:,} texts, each up to "
        f"{MAX_EMBEDDING_INPUT_CHARS:,} characters. Token-id arrays are not supported."
    )
    model: PlainModelId | None = Field(
        default=None,
        max_length=200,
        pattern=MODEL_ID_PATTERN,
        description="A Hub model id, without a provider suffix; omit it to use the "
        "deployment's embedding model.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float",
        description="`base64`: each vector as little-endian float32, as the OpenAI SDK expects.",
    )
    dimensions: Dimensions | None = Field(
        default=None,
        description="Accepted only when it equals the model's own dimension count.",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _refuse_token_ids(cls, value: Any) -> Any:
        if _is_token_ids(value):
            raise ValueError(
                "token-id arrays are not supported: send the texts themselves. With LangChain, "
                "use OpenAIEmbeddings(check_embedding_ctx_length=False)."
            )
        return value


def _is_token_ids(value: Any) -> bool:
    """True for `[1, 2, 3]` or `[[1, 2], [3]]`: what tiktoken-based clients send."""

    def is_int(item: Any) -> bool:
        return isinstance(item, int) and not isinstance(item, bool)

    if not isinstance(value, list) or not value:
        return False
    if all(is_int(item) for item in value):
        return True
    return all(isinstance(item, list) and all(is_int(x) for x in item) for item in value)


class Embedding(BaseModel):
    """One vector of an embeddings answer."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    """Input size; the upstream reports no token counts, so these count words."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """The OpenAI embeddings list shape."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


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


class ModelCard(BaseModel):
    """One entry of `/v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    task: str | None = Field(
        default=None, description="`chat-completion`, `feature-extraction`, or null when unknown."
    )


class ModelList(BaseModel):
    """The OpenAI list shape for `/v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """What `/api/health` reports: configuration as booleans, never values."""

    status: Literal["ok"] = "ok"
    version: str
    token_configured: bool
    keys_configured: bool
    anonymous_allowed: bool
    limits_store: Literal["memory", "redis"]
    limits_store_reachable: bool


class KeyPolicy(BaseModel):
    """A key's policy; `null` is no limit (and, for `models`, every allowed model)."""

    rpm: int | None
    tpm: int | None
    daily_tokens: int | None
    max_tokens: int | None
    models: list[str] | None
    expires: str | None = Field(description="ISO 8601, UTC; after it the key is refused.")


class LimitsRemaining(BaseModel):
    """What the key has left; `null` where no limit applies."""

    requests_this_minute: int | None
    tokens_this_minute: int | None
    tokens_today: int | None
    deployment_tokens_today: int | None
    minute_resets_in_s: int
    day_resets_in_s: int = Field(description="Seconds until 00:00 UTC.")


class LimitsReport(BaseModel):
    """What `/api/limits` reports to the caller about their own key."""

    key: str = Field(description="The key's name (never the key).")
    user: str | None = Field(
        default=None,
        description="With a bearer token: its user; `policy` and `remaining` are then theirs.",
    )
    policy: KeyPolicy
    remaining: LimitsRemaining
    limits_store: Literal["memory", "redis"]


class ErrorDetail(BaseModel):
    """The inside of an error body."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error promptgate returns: the shape the OpenAI SDK parses."""

    error: ErrorDetail


class TaskErrorBody(BaseModel):
    """Errors on `/models/*`: the shape huggingface_hub reads (`error_type` names the kind)."""

    error: str
    error_type: str


class TokenRequest(BaseModel):
    """`POST /v1/tokens`: a token for one end user, narrowing the caller's key. Every field
    but `user` is optional; a limit left out is not applied for the user (the key's are)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"user": "user-1234", "ttl_s": 600, "rpm": 10, "daily_tokens": 20000}]
        },
    )

    user: str = Field(min_length=1, max_length=128, description="The end user's id in your app.")
    ttl_s: PositiveCount | None = Field(
        default=None, description="Seconds; default and most: TOKEN_MAX_TTL_S."
    )
    models: list[str] | None = Field(default=None, min_length=1, max_length=64)
    rpm: PositiveCount | None = None
    tpm: PositiveCount | None = None
    daily_tokens: PositiveCount | None = None


class TokenLimits(BaseModel):
    """A token's own limits; `null` is none for the user (the key's still apply)."""

    rpm: int | None
    tpm: int | None
    daily_tokens: int | None


class TokenResponse(BaseModel):
    """A minted token: send it as `Authorization: Bearer <token>` until `expires_at`."""

    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: int = Field(description="Unix seconds.")
    user: str
    models: list[str]
    limits: TokenLimits
