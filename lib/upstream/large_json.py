"""JSON answers that may outgrow a serverless platform's cap on response bodies.

Vercel refuses a function's response body over 4.5 MB unless the response is streamed, and
a body sent in several pieces is. Bulk embeddings reach that size: 2,048 vectors of 384
floats are about 8 MB of JSON. (AWS Lambda buffers every response and caps it at 6 MB.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.responses import Response

from lib.upstream.event_stream import BoundedStreamingResponse

# Above this, a body goes out in pieces; below Vercel's 4.5 MB with room for the headers.
STREAM_ABOVE_BYTES = 4_000_000
_PIECE_BYTES = 1_048_576


def json_response(
    content: bytes, *, deadline: float | None = None, idle_timeout_s: float = 30.0
) -> Response:
    """`content` as `application/json`: in one piece when small, else streamed in 1 MB pieces.

    Each piece's send is bounded by `idle_timeout_s`, and all of them by the request's
    `deadline` (loop time), or the idle limit from now when that is later: a caller who stops
    reading is dropped, and the answer's bytes freed, at the bound instead of being held for
    as long as the caller likes.
    """
    if len(content) <= STREAM_ABOVE_BYTES:
        return Response(content, media_type="application/json")
    at_least = asyncio.get_running_loop().time() + idle_timeout_s
    deadline = at_least if deadline is None else max(deadline, at_least)
    return BoundedStreamingResponse(
        _pieces(content),
        deadline=deadline,
        idle_timeout_s=idle_timeout_s,
        media_type="application/json",
    )


async def _pieces(content: bytes) -> AsyncIterator[bytes]:
    view = memoryview(content)
    del content  # the view holds the answer; closing this generator frees it
    for start in range(0, len(view), _PIECE_BYTES):
        yield bytes(view[start : start + _PIECE_BYTES])
