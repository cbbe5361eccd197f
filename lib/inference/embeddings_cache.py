"""Embeddings through the response cache, one entry per input text: a batch that is half
cached sends only the other half upstream, and is charged only for it.

An answer never mixes two models' vectors: where the model has fallbacks (`alone` false), a
batch not wholly cached goes upstream whole, and vectors are kept only when the model asked
answered them.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lib.inference.cache_keys import DROPPED_FIELDS, cache_directives, cache_key
from lib.inference.cache_lookup import CACHE_HEADER
from lib.inference.embeddings import answer_embeddings, word_count
from lib.schemas import EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from lib.upstream import UpstreamCall

if TYPE_CHECKING:
    from lib.access import CachedAnswer, Caller, ResponseCache

EMBEDDINGS_PATH = "/v1/embeddings"
# The route's embedding of some texts: the answer, and whether its usage is the upstream's
# token count (an OpenAI-compatible server) rather than a word count.
Embed = Callable[[EmbeddingRequest], Awaitable[tuple[EmbeddingResponse, bool]]]
# Fields of the request that do not change a vector: how it is encoded, and which texts.
_NOT_IN_KEY = DROPPED_FIELDS | {"input", "encoding_format", "model"}


async def cached_embeddings(
    body: EmbeddingRequest,
    call: UpstreamCall,
    caller: Caller,
    cache: ResponseCache,
    cache_control: str | None,
    embed: Embed,
    *,
    alone: bool,
) -> EmbeddingResponse:
    """Embed `body`'s texts, the cached ones from the cache and the rest with `embed`, and
    charge the caller; `alone` is false when the model has fallbacks."""
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    rule, directives = caller.cache, cache_directives(cache_control)
    assert rule is not None  # only callers whose answers are cached come here
    model = call.model
    options = body.model_dump(exclude_unset=True, exclude=_NOT_IN_KEY)
    keys = [
        cache_key(rule.namespace, EMBEDDINGS_PATH, model, {**options, "input": text})
        for text in texts
    ]
    found = await cache.get_many(keys) if directives.read else [None] * len(keys)
    vectors = [_vector(entry) for entry in found]
    missing = [i for i, vector in enumerate(vectors) if vector is None]
    headers = caller.response_headers
    if not missing:
        headers[CACHE_HEADER] = caller.record.cache = "hit"
        headers["age"] = str(max(entry.age_s for entry in found if entry is not None))
        caller.note_cached_input({"input": texts})
        await caller.charge_cache_hit(0)
        return answer_embeddings(body, vectors, model, word_count(texts))  # type: ignore[arg-type]
    headers[CACHE_HEADER] = caller.record.cache = "miss" if directives.read else "bypass"
    if not alone:  # a fallback may answer: none of the asked model's vectors are mixed in
        missing = list(range(len(texts)))
    sent = [texts[i] for i in missing]
    part = body.model_copy(update={"input": sent, "encoding_format": "float"})
    result, reports_tokens = await embed(part)
    new = [item.embedding for item in result.data]
    for i, vector in zip(missing, new, strict=True):
        vectors[i] = vector  # type: ignore[assignment]
    missed = set(missing)
    cached = [text for i, text in enumerate(texts) if i not in missed]
    if cached:
        caller.note_cached_input({"input": cached})
    reported = result.usage.model_dump() if reports_tokens else None
    await caller.charge(reported, payload={"input": sent})
    if directives.write and call.model == model:  # a fallback's vectors are not the model's
        kept = [(keys[i], {"f64": _packed(vector)}) for i, vector in zip(missing, new, strict=True)]
        await cache.put_many(kept, rule.ttl_s)
    usage = word_count(texts)
    if reports_tokens:
        extra = word_count(cached).prompt_tokens if cached else 0
        usage = EmbeddingUsage(
            prompt_tokens=result.usage.prompt_tokens + extra,
            total_tokens=result.usage.total_tokens + extra,
        )
    return answer_embeddings(body, vectors, call.model, usage)  # type: ignore[arg-type]


def _packed(vector: list[float]) -> str:
    """A vector as an entry keeps it: little-endian float64, base64 (exact, and read back in a
    third of the time JSON's floats take)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}d", *vector)).decode()


def _vector(entry: CachedAnswer | None) -> list[float] | None:
    """The vector an entry holds, or None (no entry, or not a vector of finite numbers)."""
    body = entry.body if entry is not None else None
    packed: Any = body.get("f64") if isinstance(body, dict) else None
    if not isinstance(packed, str):
        return None
    try:
        raw = base64.b64decode(packed, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or len(raw) % 8:
        return None
    vector = list(struct.unpack(f"<{len(raw) // 8}d", raw))
    return vector if math.isfinite(sum(vector)) else None
