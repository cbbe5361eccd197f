"""Are streamed chunks held back? An upstream that drips SSE events, and a clock at both ends.

The drip upstream runs in this process (its own thread and event loop) and notes when it
writes each event; a raw-socket client notes when each event reaches it through the target.
An event is held back when it arrives only after the upstream has written the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field

EVENTS = 5
GAP_S = 0.05


@dataclass
class Drip:
    """The drip upstream's state: its port, and when it wrote each event of the last stream."""

    port: int = 0
    sent_at: list[float] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Drip:
        threading.Thread(target=self._serve, daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("the drip upstream did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._answer, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        self.sent_at = []
        for i in range(EVENTS):
            chunk = {"object": "chat.completion.chunk", "n": i, "model": "m"}
            chunk["choices"] = [{"index": 0, "delta": {"content": f"w{i}"}, "finish_reason": None}]
            _write_chunk(writer, f"data: {json.dumps(chunk)}\n\n".encode())
            await writer.drain()
            self.sent_at.append(time.perf_counter())
            await asyncio.sleep(GAP_S)
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        # A proxy may hang up as soon as it has read `[DONE]`.
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def arrivals(port: int, request: bytes) -> list[float]:
    """When (perf_counter) each dripped event reached the client through the target on `port`."""
    seen: list[float] = []
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while len(seen) < EVENTS:
            data = sock.recv(65536)
            if not data:
                break
            now = time.perf_counter()
            received += data
            while len(seen) < EVENTS and f'"n": {len(seen)}'.encode() in received:
                seen.append(now)
    return seen


def held_back(sent_at: list[float], arrived_at: list[float]) -> tuple[int, float]:
    """(events that arrived after the next one was written, the largest delay in ms)."""
    late = sum(
        1
        for i, arrived in enumerate(arrived_at)
        if i + 1 < len(sent_at) and arrived > sent_at[i + 1]
    )
    late += EVENTS - len(arrived_at)  # never arrived at all
    delays = [arrived - sent for sent, arrived in zip(sent_at, arrived_at, strict=False)]
    return late, max(delays, default=0.0) * 1000
