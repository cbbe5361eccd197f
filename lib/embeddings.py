"""Embeddings: OpenAI's `/v1/embeddings` served by Hugging Face's feature-extraction pipeline."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from lib.errors import ClientRequestError, UpstreamError
from lib.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from lib.upstream import UpstreamCall, UpstreamClient

# The largest magnitude a float32 holds: what base64 embeddings are encoded as.
_FLOAT32_MAX = 3.4028234663852886e38


def feature_extraction_path(model: str) -> str:
    """The router path of a model's feature-extraction pipeline on hf-inference."""
    return f"/hf-inference/models/{model}/pipeline/feature-extraction"


async def create_embeddings(
    upstream: UpstreamClient, body: EmbeddingRequest, call: UpstreamCall
) -> EmbeddingResponse:
    """Embed every input text; vectors come back in input order, encoded as asked."""
    model = call.model
    texts = [body.input] if isinstance(body.input, str) else body.input
    reply = await upstream.post_json(feature_extraction_path(model), {"inputs": texts}, call)
    vectors = sentence_vectors(reply.data, len(texts))
    if body.dimensions is not None and body.dimensions != len(vectors[0]):
        raise ClientRequestError(
            f"The model '{model}' returns {len(vectors[0])} dimensions and cannot shorten them; "
            f"omit 'dimensions' or set it to {len(vectors[0])}.",
            param="dimensions",
            code="unsupported_dimensions",
        )
    words = sum(len(text.split()) for text in texts)
    return EmbeddingResponse(
        data=[
            Embedding(index=i, embedding=_encode(vector, body.encoding_format))
            for i, vector in enumerate(vectors)
        ],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=words, total_tokens=words),
    )


def sentence_vectors(data: Any, count: int) -> list[list[float]]:
    """One vector per input from a feature-extraction answer.

    The pipeline answers a vector per input for sentence models, or a vector per token
    for others (mean-pooled here); a lone input may come back as a bare vector.
    """
    if count == 1 and _is_vector(data):
        data = [data]
    if not isinstance(data, list) or len(data) != count:
        raise UpstreamError("The upstream answered with an unexpected embedding shape.")
    vectors = []
    for item in data:
        if _is_vector(item):
            vectors.append([float(x) for x in item])
        elif isinstance(item, list) and item and all(_is_vector(token) for token in item):
            vectors.append(_mean(item))
        else:
            raise UpstreamError("The upstream answered with an unexpected embedding shape.")
    if len({len(v) for v in vectors}) != 1:
        raise UpstreamError("The upstream answered with vectors of different lengths.")
    for vector in vectors:
        # A sum is NaN or infinite if any value is; max and min run at C speed.
        if (
            not math.isfinite(sum(vector))
            or max(vector) > _FLOAT32_MAX
            or min(vector) < -_FLOAT32_MAX
        ):
            raise UpstreamError("The upstream answered with a vector value out of range.")
    return vectors


def _is_vector(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    )


def _mean(tokens: list[list[float]]) -> list[float]:
    width = len(tokens[0])
    if any(len(token) != width for token in tokens):
        raise UpstreamError("The upstream answered with token vectors of different lengths.")
    return [sum(column) / len(tokens) for column in zip(*tokens, strict=True)]


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # Little-endian float32, which is what the OpenAI SDK decodes.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
