"""The response cache's key: an exact match on a canonical form of the request, and which
requests may be cached at all.

The canonical form is the route, the resolved model and the upstream body (after the
completion cap is applied) as JSON with sorted keys, less the fields that do not change the
answer (`DROPPED_FIELDS`); its SHA-256 names the entry, under the caller's scope.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Fields left out of the canonical form: who asks (`user`, `safety_identifier`), how the
# answer is delivered (`stream`, `stream_options`), and labels the model never reads
# (`metadata`, `prompt_cache_key`).
DROPPED_FIELDS = frozenset(
    {"user", "stream", "stream_options", "metadata", "safety_identifier", "prompt_cache_key"}
)
# An OpenAI-compatible server samples at temperature 1 when the request names none.
_DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """What the caller's `Cache-Control` asks: `no-cache` skips the read, `no-store` the write."""

    read: bool = True
    write: bool = True


def cache_directives(cache_control: str | None) -> CacheDirectives:
    """The directives of a `Cache-Control` request header (others are ignored)."""
    if not cache_control:
        return CacheDirectives()
    words = {part.strip().lower() for part in cache_control.split(",")}
    return CacheDirectives(read="no-cache" not in words, write="no-store" not in words)


def is_deterministic(payload: dict[str, Any]) -> bool:
    """True when the answer does not depend on sampling: temperature 0 (none sent is the
    server's default, 1), or a `seed`."""
    temperature = payload.get("temperature", _DEFAULT_TEMPERATURE)
    if isinstance(temperature, int | float) and temperature <= 0:
        return True
    seed = payload.get("seed")
    return isinstance(seed, int) and not isinstance(seed, bool)


def canonical_form(route: str, model: str, payload: dict[str, Any]) -> bytes:
    """The request as the cache compares it: route, model and body, keys sorted, the fields
    that do not change the answer left out."""
    body = {name: value for name, value in payload.items() if name not in DROPPED_FIELDS}
    body.pop("model", None)
    text = json.dumps(
        [route, model, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return text.encode(errors="surrogatepass")


def cache_key(namespace: str, route: str, model: str, payload: dict[str, Any]) -> str:
    """The store key of the request's entry in `namespace` (the caller's scope)."""
    digest = hashlib.sha256(canonical_form(route, model, payload)).hexdigest()
    return namespace + digest
