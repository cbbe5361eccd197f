"""The upstream client: one pool per event loop, requests built only from server-side values."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from lib.errors import NotConfiguredError, UpstreamError, UpstreamTimeoutError
from lib.upstream import MAX_EVENT_BYTES, MAX_RESPONSE_BYTES, UpstreamCall, UpstreamClient
from tests.conftest import CANARY_TOKEN, UPSTREAM, chat_completion, make_settings

CHAT = "/v1/chat/completions"


def recording_transport(seen: list[httpx.Request], **response: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=chat_completion(), **response)  # type: ignore[arg-type]

    return httpx.MockTransport(handler)


def test_given_transport_serves_calls_from_successive_loops() -> None:
    seen: list[httpx.Request] = []
    upstream = UpstreamClient(make_settings(), transport=recording_transport(seen))

    async def two_calls() -> None:
        await upstream.post_json(CHAT, {"model": "m"}, UpstreamCall("r1", "m"))
        await upstream.post_json(CHAT, {"model": "m"}, UpstreamCall("r2", "m"))

    asyncio.run(two_calls())
    asyncio.run(two_calls())  # a new loop, as after a runtime restart
    assert [request.headers["x-request-id"] for request in seen] == ["r1", "r2"] * 2


def test_request_carries_server_token_request_id_and_exact_url() -> None:
    seen: list[httpx.Request] = []
    upstream = UpstreamClient(make_settings(), transport=recording_transport(seen))
    reply = asyncio.run(
        upstream.post_json(CHAT, {"model": "m", "messages": []}, UpstreamCall("abc", "m"))
    )
    assert reply.data["object"] == "chat.completion"
    request = seen[0]
    assert str(request.url) == f"{UPSTREAM}{CHAT}"
    assert request.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert request.headers["x-request-id"] == "abc"
    assert request.headers["user-agent"].startswith("promptgate/")
    assert json.loads(request.content) == {"model": "m", "messages": []}


def test_missing_token_raises_before_any_request() -> None:
    seen: list[httpx.Request] = []
    upstream = UpstreamClient(make_settings(hf_token=None), transport=recording_transport(seen))
    with pytest.raises(NotConfiguredError):
        asyncio.run(upstream.post_json(CHAT, {}, UpstreamCall("r", "m")))
    assert not seen


def test_oversized_upstream_answer_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (MAX_RESPONSE_BYTES + 1))

    upstream = UpstreamClient(make_settings(), transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError, match="larger than"):
        asyncio.run(upstream.post_json(CHAT, {}, UpstreamCall("r", "m")))


def test_deadline_bounds_a_hanging_upstream() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=chat_completion())

    settings = make_settings(request_timeout_s=0.2)
    upstream = UpstreamClient(settings, transport=httpx.MockTransport(handler))

    async def call() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamTimeoutError):
            await upstream.post_json(CHAT, {}, UpstreamCall("r", "m"))
        return loop.time() - start

    assert asyncio.run(call()) < 1.0


def test_stream_idle_limit_ends_a_silent_stream() -> None:
    async def body():
        yield b'data: {"choices": []}\n\n'
        await asyncio.sleep(5)
        yield b"data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})

    settings = make_settings(stream_idle_timeout_s=0.2)
    upstream = UpstreamClient(settings, transport=httpx.MockTransport(handler))

    async def read() -> list[bytes]:
        stream = await upstream.open_stream(CHAT, {}, UpstreamCall("r", "m"))
        blocks = []
        with pytest.raises(UpstreamTimeoutError):
            async for block in stream.events():
                blocks.append(block)
        await stream.aclose()
        return blocks

    assert asyncio.run(read()) == [b'data: {"choices": []}']


def test_events_are_split_across_chunk_boundaries_and_crlf() -> None:
    async def body():
        for part in [b'data: {"a"', b": 1}\r\n\r\nda", b"ta: [DONE]\r\n", b"\r\n"]:
            yield part

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    upstream = UpstreamClient(make_settings(), transport=httpx.MockTransport(handler))

    async def read() -> list[bytes]:
        stream = await upstream.open_stream(CHAT, {}, UpstreamCall("r", "m"))
        return [block async for block in stream.events()]

    assert asyncio.run(read()) == [b'data: {"a": 1}', b"data: [DONE]"]


def test_stream_event_without_end_is_capped() -> None:
    async def body():
        yield b"data: " + b"x" * (MAX_EVENT_BYTES // 2)
        yield b"x" * (MAX_EVENT_BYTES // 2 + 10)
        yield b"\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    upstream = UpstreamClient(make_settings(), transport=httpx.MockTransport(handler))

    async def read() -> None:
        stream = await upstream.open_stream(CHAT, {}, UpstreamCall("r", "m"))
        async for _ in stream.events():
            pass

    with pytest.raises(UpstreamError, match="larger than"):
        asyncio.run(read())


async def _post_to(port: int) -> None:
    settings = make_settings(hf_base_url=f"http://127.0.0.1:{port}", upstream_max_attempts=1)
    upstream = UpstreamClient(settings)  # the default transport, on real loopback sockets
    try:
        await upstream.post_json(CHAT, {"model": "m"}, UpstreamCall("r", "m"))
    finally:
        await upstream.aclose()


def test_default_transport_reports_a_refused_connection_as_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(UpstreamError) as caught:
        asyncio.run(_post_to(port))
    assert type(caught.value) is UpstreamError
    assert caught.value.message == "Could not connect to the upstream."


def test_default_transport_reports_a_dropped_connection_as_one_not_as_a_timeout() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.close()

    async def call() -> None:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        async with server:
            await _post_to(server.sockets[0].getsockname()[1])

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(call())
    assert type(caught.value) is UpstreamError
    assert caught.value.message == "The connection to the upstream failed."
