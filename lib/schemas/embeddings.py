"""Embedding bodies: `/v1/embeddings` requests and the OpenAI list they are answered with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from lib.model_ids import MODEL_ID_PATTERN
from lib.schemas.fields import Dimensions, PlainModelId

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
