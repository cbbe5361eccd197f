"""Upstream bodies: JSON encoded for the router, and its answers read within a size cap."""

from __future__ import annotations

import json
from typing import Any

import httpx

from lib.errors import UpstreamError

# Far above any chat or embedding answer, far below what would hurt a 2 GB function.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# An error's reason is in its first kilobytes; the rest is not read into memory.
MAX_ERROR_BYTES = 64 * 1024


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: `json.loads` with a hook would build a decoder per call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(content: bytes) -> Any:
    """Parse an upstream JSON body; `NaN` and `Infinity`, which JSON lacks, are refused.

    Raises `ValueError` (invalid UTF-8 included) for anything that is not JSON.
    """
    return _STRICT_DECODER.decode(content.decode("utf-8-sig"))


def encode_json(payload: dict[str, Any]) -> bytes:
    """`payload` as compact UTF-8 JSON; a lone surrogate goes as a JSON escape."""
    try:
        return json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except UnicodeEncodeError:
        # A lone surrogate (lib.http's strict decoding refuses them in bodies): escaped.
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


async def read_capped(
    response: httpx.Response, limit: int = MAX_RESPONSE_BYTES, *, truncate: bool = False
) -> bytes:
    """The body, up to `limit` bytes: past it, cut (`truncate`) or an `UpstreamError`."""
    size = 0
    parts: list[bytes] = []
    # Undecoded when not compressed: httpx's decoder chain does nothing to an identity body
    # and cost ~5 of the ~13 µs of reading a small answer (a micro-benchmark). (A body already in
    # memory, as a test's transport gives, is only read through the decoder.)
    raw = "content-encoding" not in response.headers and not response.is_stream_consumed
    async for chunk in response.aiter_raw() if raw else response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            if truncate:
                parts.append(chunk[: len(chunk) - (size - limit)])
                break
            raise UpstreamError("The upstream answer was larger than this proxy accepts.")
        parts.append(chunk)
    return b"".join(parts)
