"""Large JSON answers go out in pieces, and a caller who stops reading holds them only until
the bound: unit-level with a send that never finishes, and over a real socket under h11."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from fastapi.responses import StreamingResponse

from lib.standin import StandinState
from lib.upstream import json_response
from lib.upstream.large_json import STREAM_ABOVE_BYTES
from tests.conftest import AUTH, CANARY_TOKEN
from tests.servers import serve_proxy_and_standin
from tests.test_upstream_chat_relay import _never_reading_send, _no_disconnect

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_small_answer_goes_in_one_piece() -> None:
    response = json_response(b'{"ok":true}', idle_timeout_s=0.2)
    assert not isinstance(response, StreamingResponse)
    assert response.body == b'{"ok":true}'


@pytest.mark.parametrize(
    ("deadline_in_s", "idle_s"),
    [(0.3, 0.3), (60.0, 0.3), (-5.0, 0.3)],
    ids=["both", "idle", "late"],
)
async def test_a_caller_who_stops_reading_is_dropped_at_the_bound_and_the_answer_freed(
    deadline_in_s: float, idle_s: float
) -> None:
    loop = asyncio.get_running_loop()
    content = b"[" + b"0.1," * (STREAM_ABOVE_BYTES // 4 + 10) + b"0.1]"
    response = json_response(content, deadline=loop.time() + deadline_in_s, idle_timeout_s=idle_s)
    assert isinstance(response, StreamingResponse)
    pieces = response.body_iterator
    del content
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "state": {}}
    started = time.monotonic()
    async with asyncio.timeout(10):  # far beyond every bound: a hang fails here
        await response(scope, _no_disconnect, _never_reading_send)
    # The bound is the idle limit, or at least one idle limit from now when the deadline is
    # nearer: never the caller's pace.
    assert time.monotonic() - started < idle_s + 1.5
    assert scope["state"]["caller_stalled"] is True
    assert pieces.ag_frame is None  # closed: nothing holds the answer's bytes any more


def test_over_a_real_socket_a_stalled_reader_of_big_embeddings_is_dropped() -> None:
    body = json.dumps({"input": [f"text number {i}" for i in range(2048)]}).encode()
    with serve_proxy_and_standin(
        StandinState(token=CANARY_TOKEN), stream_idle_timeout_s=0.5
    ) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.connect(("127.0.0.1", port))
            sock.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: {AUTH['Authorization']}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            time.sleep(3)  # a caller who stops reading, far past the 0.5 s bound
            sock.settimeout(10)
            received = len(head)
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
    # The connection ended (EOF or reset) before the whole answer (about 8 MB) was sent.
    assert received < 6_000_000
