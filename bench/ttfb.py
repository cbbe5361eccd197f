"""Time to first streamed byte, measured with a raw socket so that no client library adds noise.

One keep-alive connection; for each sample, the clock starts just before the request is
written (on loopback the answer can arrive before `sendall` returns) and stops when the first
bytes of the first SSE event (`data:`) arrive. The rest of the response is read
(Content-Length or chunked) so the connection can carry the next sample.
"""

from __future__ import annotations

import socket
import statistics
import time

_HEADER_END = b"\r\n\r\n"


def build_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 POST request with a JSON body, as raw bytes."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def probe(port: int, request: bytes, samples: int, warmup: int = 5) -> list[float]:
    """Seconds to the first `data:` bytes, for `samples` requests after `warmup` unmeasured ones."""
    times: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(warmup + samples):
            started = time.perf_counter()
            sock.sendall(request)
            first_event_at = _read_response(sock)
            if i >= warmup:
                times.append(first_event_at - started)
    return times


def median_ms(times: list[float]) -> float:
    """The median of `times` (seconds), in milliseconds."""
    return statistics.median(times) * 1000


def _read_response(sock: socket.socket) -> float:
    """Read one whole response; return when (perf_counter) its first `data:` bytes arrived."""
    buffer = b""
    first_event_at = 0.0
    while _HEADER_END not in buffer:
        buffer += _recv(sock)
    head, _, body = buffer.partition(_HEADER_END)
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"expected status 200, got {head.decode(errors='replace')!r}")
    if b"data:" in body:
        first_event_at = time.perf_counter()
    headers = head.lower()
    if b"transfer-encoding: chunked" in headers:
        while not _chunked_complete(body):
            body += _recv(sock)
            if not first_event_at and b"data:" in body:
                first_event_at = time.perf_counter()
    else:
        length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += _recv(sock)
            if not first_event_at and b"data:" in body:
                first_event_at = time.perf_counter()
    if not first_event_at:
        raise RuntimeError("the response held no SSE event")
    return first_event_at


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise RuntimeError("the server closed the connection mid-response")
    return data


def _chunked_complete(body: bytes) -> bool:
    position = 0
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            return False
        size = int(body[position:line_end].split(b";", 1)[0], 16)
        if size == 0:
            return body.endswith(b"\r\n\r\n", line_end)
        position = line_end + 2 + size + 2
        if position > len(body):
            return False
