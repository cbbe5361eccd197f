"""JSON answers that may outgrow a serverless platform's cap on response bodies.

Vercel refuses a function's response body over 4.5 MB unless the response is streamed, and
a body sent in several pieces is. Bulk embeddings reach that size: 2,048 vectors of 384
floats are about 8 MB of JSON. (AWS Lambda buffers every response and caps it at 6 MB.)
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.responses import Response, StreamingResponse

# Above this, a body goes out in pieces; below Vercel's 4.5 MB with room for the headers.
STREAM_ABOVE_BYTES = 4_000_000
_PIECE_BYTES = 1_048_576


def json_response(content: bytes) -> Response:
    """`content` as `application/json`: in one piece when small, else streamed in 1 MB pieces."""
    if len(content) <= STREAM_ABOVE_BYTES:
        return Response(content, media_type="application/json")
    return StreamingResponse(_pieces(content), media_type="application/json")


def _pieces(content: bytes) -> Iterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(content), _PIECE_BYTES):
        yield bytes(view[start : start + _PIECE_BYTES])
