"""Embeddings: OpenAI's `/v1/embeddings` served by Hugging Face's feature-extraction pipeline.

With `UPSTREAM_API=openai`, relayed to the server's own `/v1/embeddings` instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from lib.errors import ClientRequestError, InvalidFieldError, UpstreamError
from lib.schemas import (
    MAX_EMBEDDING_INPUTS,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from lib.upstream import UpstreamCall, UpstreamClient

# The largest magnitude a float32 holds: what base64 embeddings are encoded as.
_FLOAT32_MAX = 3.4028234663852886e38

# Batches of one request in flight at once: 2,048 texts in batches of 32 take 16 rounds,
# a few seconds, without one caller setting off the router's rate limit on its own.
EMBEDDING_CONCURRENCY = 4


def feature_extraction_path(model: str) -> str:
    """The router path of a model's feature-extraction pipeline on hf-inference."""
    return f"/hf-inference/models/{model}/pipeline/feature-extraction"


async def create_embeddings(
    upstream: UpstreamClient, body: EmbeddingRequest, call: UpstreamCall, batch_size: int
) -> EmbeddingResponse:
    """Embed every input text; vectors come back in input order, encoded as asked."""
    model = call.model
    texts = [body.input] if isinstance(body.input, str) else body.input
    items = await embed_in_batches(upstream, texts, {}, call, batch_size)
    vectors = sentence_vectors(items, len(texts))
    return answer_embeddings(body, vectors, model, word_count(texts))


async def extract_features(
    upstream: UpstreamClient, payload: dict[str, Any], call: UpstreamCall, batch_size: int
) -> bytes:
    """Answer a feature-extraction task body as hf-inference does, one item per input.

    A list of more than `batch_size` texts is split like `/v1/embeddings` input; anything
    else passes through in one call, answered with the upstream's own bytes.
    """
    texts = payload.get("inputs")
    if not _is_text_list(texts) or len(texts) <= batch_size:
        reply = await upstream.post_json(feature_extraction_path(call.model), payload, call)
        return reply.content
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidFieldError(
            f"At most {MAX_EMBEDDING_INPUTS} inputs per request, not {len(texts)}.",
            param="inputs",
        )
    options = {name: value for name, value in payload.items() if name != "inputs"}
    items = await embed_in_batches(upstream, texts, options, call, batch_size)
    return json.dumps(items, separators=(",", ":")).encode()


async def embed_in_batches(
    upstream: UpstreamClient,
    texts: list[str],
    options: dict[str, Any],
    call: UpstreamCall,
    batch_size: int,
) -> list[Any]:
    """The feature-extraction answer for each text, in input order.

    Texts go upstream in batches of `batch_size`, at most `EMBEDDING_CONCURRENCY` at once,
    all within the request's one deadline. The first batch to fail cancels the others, and
    its error is the request's.
    """
    path = feature_extraction_path(call.model)

    async def embed(batch: list[str]) -> list[Any]:
        reply = await upstream.post_json(path, {**options, "inputs": batch}, call)
        return _answer_items(reply.data, len(batch))

    return await _in_batches(texts, batch_size, embed)


async def _in_batches(
    texts: list[str], batch_size: int, embed: Callable[[list[str]], Awaitable[list[Any]]]
) -> list[Any]:
    """`embed` on each batch of `batch_size` texts, at most `EMBEDDING_CONCURRENCY` at once;
    the items in input order. The first batch to fail cancels the others."""
    gate = asyncio.Semaphore(EMBEDDING_CONCURRENCY)

    async def gated(batch: list[str]) -> list[Any]:
        async with gate:
            return await embed(batch)

    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    if len(batches) == 1:
        return await embed(batches[0])
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(batch)) for batch in batches]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [item for task in tasks for item in task.result()]


def _answer_items(data: Any, count: int) -> list[Any]:
    """One item per input from a batch's answer (a lone input may come back unwrapped)."""
    if count == 1 and _is_vector(data):
        return [data]
    if not isinstance(data, list) or len(data) != count:
        raise UpstreamError("The upstream answered with an unexpected embedding shape.")
    return data


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


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
    _check_float32_range(vectors)
    return vectors


def _check_float32_range(vectors: list[list[float]]) -> None:
    """Refuse NaN, infinities and values no float32 holds (base64 encoding could not pack them)."""
    for vector in vectors:
        # A sum is NaN or infinite if any value is; max and min run at C speed.
        if (
            not math.isfinite(sum(vector))
            or max(vector) > _FLOAT32_MAX
            or min(vector) < -_FLOAT32_MAX
        ):
            raise UpstreamError("The upstream answered with a vector value out of range.")


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


def answer_embeddings(
    body: EmbeddingRequest, vectors: list[list[float]], model: str, usage: EmbeddingUsage
) -> EmbeddingResponse:
    """The OpenAI embeddings list: the vectors in input order, encoded as the caller asked.

    Raises `ClientRequestError` when `dimensions` asks for another width than the model's.
    """
    width = len(vectors[0])
    if body.dimensions is not None and body.dimensions != width:
        raise ClientRequestError(
            f"The model '{model}' returns {width} dimensions, not the {body.dimensions} asked, "
            f"and cannot shorten them; omit 'dimensions' or set it to {width}.",
            param="dimensions",
            code="unsupported_dimensions",
        )
    return EmbeddingResponse(
        data=[
            Embedding(index=i, embedding=_encode(vector, body.encoding_format))
            for i, vector in enumerate(vectors)
        ],
        model=model,
        usage=usage,
    )


def word_count(texts: list[str]) -> EmbeddingUsage:
    """The input's size in words: the feature-extraction pipeline reports no tokens."""
    words = sum(len(text.split()) for text in texts)
    return EmbeddingUsage(prompt_tokens=words, total_tokens=words)


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # Little-endian float32, which is what the OpenAI SDK decodes.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


OPENAI_EMBEDDINGS_PATH = "/v1/embeddings"


async def relay_openai_embeddings(
    upstream: UpstreamClient, body: EmbeddingRequest, call: UpstreamCall, batch_size: int
) -> EmbeddingResponse:
    """Embeddings from an OpenAI-compatible server (`UPSTREAM_API=openai`), as the caller asked.

    The request goes to `/v1/embeddings` as sent, with the resolved model, split in batches of
    `batch_size` texts as for the router (TEI refuses more than 32 by default); the server is
    asked for floats, which every such server returns (not all of them honour base64), and
    the vectors are then encoded as the caller asked. The server's token counts are passed on.
    """
    options = body.model_dump(exclude_unset=True, exclude={"input"})
    options.update(model=call.model, encoding_format="float")
    texts = [body.input] if isinstance(body.input, str) else body.input
    counts: list[Any] = []

    async def embed(batch: list[str]) -> list[list[float]]:
        sent = body.input if isinstance(body.input, str) else batch
        reply = await upstream.post_json(OPENAI_EMBEDDINGS_PATH, {**options, "input": sent}, call)
        counts.append(reply.data.get("usage"))
        return _openai_vectors(reply.data, len(batch))

    vectors = await _in_batches(texts, batch_size, embed)
    if len({len(v) for v in vectors}) != 1:
        raise UpstreamError("The upstream answered with vectors of different lengths.")
    keys = ("prompt_tokens", "total_tokens")
    if all(isinstance(c, dict) and all(isinstance(c.get(k), int) for k in keys) for c in counts):
        counted = EmbeddingUsage(**{k: sum(c[k] for c in counts) for k in keys})
    else:
        counted = word_count(texts)
    return answer_embeddings(body, vectors, call.model, counted)


def _openai_vectors(data: Any, count: int) -> list[list[float]]:
    """The vectors of an OpenAI embeddings list, in input order, all of one length."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise UpstreamError("The upstream answered with an unexpected embeddings shape.")
    by_index: dict[int, list[float]] = {}
    for position, item in enumerate(items):
        vector = item.get("embedding") if isinstance(item, dict) else None
        index = item.get("index", position) if isinstance(item, dict) else None
        if not _is_vector(vector) or not isinstance(index, int) or index in by_index:
            raise UpstreamError("The upstream answered with an unexpected embeddings shape.")
        by_index[index] = [float(x) for x in vector]
    if sorted(by_index) != list(range(count)):
        raise UpstreamError("The upstream answered with an unexpected embeddings shape.")
    vectors = [by_index[i] for i in range(count)]
    _check_float32_range(vectors)
    return vectors
