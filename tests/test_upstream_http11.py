"""promptgate's own upstream transport (lib/upstream/http11.py) against scripted servers on
loopback: real sockets, real bytes, each fault as a server would commit it."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from lib.upstream.bodies import read_capped
from lib.upstream.http11 import Http11Transport
from tests.certificates import self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
TIMEOUTS = {"timeout": httpx.Timeout(2.0).as_dict()}


def _answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return head + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request, head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class Server:
    """A loopback server running `handler(reader, writer, connection number)` per connection
    (by default `keep_alive`); the requests `keep_alive` answered are kept."""

    def __init__(self, handler: Handler | None = None) -> None:
        self._handler = handler or self.keep_alive
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._handler(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def keep_alive(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        """Answer every request on the connection with its number, as JSON."""
        while True:
            self.requests.append(await _read_request(reader))
            writer.write(_answer(b'{"n":%d}' % len(self.requests)))
            await writer.drain()


async def _post(transport: Http11Transport, url: str, body: bytes = b'{"q":1}') -> httpx.Response:
    request = httpx.Request(
        "POST",
        url + "/v1/chat/completions",
        content=body,
        headers=[(b"Authorization", b"Bearer hf_test_canary_http11")],
        extensions=TIMEOUTS,
    )
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


def test_answers_reuse_one_connection_and_carry_the_request_as_sent() -> None:
    async def scenario() -> tuple[list[bytes], int, list[bytes]]:
        async with Server() as server:
            transport = Http11Transport()
            answers = [(await _post(transport, server.url)).content for _ in range(3)]
            await transport.aclose()
            return answers, server.connections, server.requests

    answers, connections, requests = asyncio.run(scenario())
    assert answers == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert connections == 1
    head, _, body = requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer hf_test_canary_http11" in head
    assert b"Content-Length: 7" in head and body == b'{"q":1}'


def test_a_chunked_stream_arrives_piece_by_piece() -> None:
    async def scenario() -> list[bytes]:
        got_first = asyncio.Event()

        async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata:1\r\n")
            await writer.drain()
            await asyncio.wait_for(got_first.wait(), 2)  # the second only after the first
            writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")
            await writer.drain()

        async with Server(drip) as server:
            transport = Http11Transport()
            request = httpx.Request("POST", server.url, content=b"{}", extensions=TIMEOUTS)
            response = await transport.handle_async_request(request)
            pieces = []
            async for piece in response.aiter_raw():
                pieces.append(piece)
                got_first.set()
            await response.aclose()
            await transport.aclose()
            return pieces

    assert asyncio.run(scenario()) == [b"data:1", b"data:2"]


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def scenario() -> tuple[list[int], int]:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await _read_request(reader)
            writer.write(_answer(b'{"n":%d}' % n))
            await writer.drain()  # then closed: the next request needs a new connection

        async with Server(once) as server:
            transport = Http11Transport()
            statuses = [(await _post(transport, server.url)).status_code]
            await asyncio.sleep(0.05)  # the close reaches the client's loop
            statuses.append((await _post(transport, server.url)).status_code)
            await transport.aclose()
            return statuses, server.connections

    assert asyncio.run(scenario()) == ([200, 200], 2)


def test_a_reused_connection_closed_before_any_answer_is_retried_once_on_a_new_one() -> None:
    async def scenario() -> tuple[bytes, int]:
        async def race(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await _read_request(reader)
            writer.write(_answer(b'{"n":%d}' % n))
            await writer.drain()
            if n == 1:
                await _read_request(reader)  # the second request: closed unanswered

        async with Server(race) as server:
            transport = Http11Transport()
            await _post(transport, server.url)
            answer = await _post(transport, server.url)
            await transport.aclose()
            return answer.content, server.connections

    assert asyncio.run(scenario()) == (b'{"n":2}', 2)


def test_a_new_connection_closed_before_any_answer_is_a_protocol_error() -> None:
    async def scenario() -> int:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await _read_request(reader)

        async with Server(mute) as server:
            transport = Http11Transport()
            with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
                await _post(transport, server.url)
            await transport.aclose()
            return server.connections

    assert asyncio.run(scenario()) == 1  # not retried: the server did not answer a new one


def test_an_answer_cut_short_is_a_protocol_error_and_its_connection_is_not_reused() -> None:
    async def scenario() -> int:
        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await _read_request(reader)
            if n == 1:
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
            else:
                writer.write(_answer(b"{}"))
            await writer.drain()

        async with Server(cut) as server:
            transport = Http11Transport()
            with pytest.raises(httpx.RemoteProtocolError):
                await _post(transport, server.url)
            assert (await _post(transport, server.url)).content == b"{}"
            await transport.aclose()
            return server.connections

    assert asyncio.run(scenario()) == 2


def test_a_reader_that_stops_early_closes_the_connection() -> None:
    async def scenario() -> int:
        async def long(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            while True:
                await _read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(b"0\r\n\r\n")
                await writer.drain()

        async with Server(long) as server:
            transport = Http11Transport()
            request = httpx.Request("POST", server.url, content=b"{}", extensions=TIMEOUTS)
            response = await transport.handle_async_request(request)
            async for _ in response.aiter_raw():
                break
            await response.aclose()  # mid-body: its connection cannot serve another
            await _post(transport, server.url)
            await transport.aclose()
            return server.connections

    assert asyncio.run(scenario()) == 2


def test_connection_close_and_expired_idle_connections_are_not_reused() -> None:
    async def scenario() -> int:
        async def close_first(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
        ) -> None:
            while True:
                await _read_request(reader)
                extra = (b"Connection: close\r\n",) if n == 1 else ()
                writer.write(_answer(b"{}", *extra))
                await writer.drain()

        async with Server(close_first) as server:
            transport = Http11Transport(keepalive_expiry_s=0.1)
            await _post(transport, server.url)  # connection 1 says close
            await _post(transport, server.url)  # connection 2, pooled
            await asyncio.sleep(0.2)  # and idle past its expiry
            await _post(transport, server.url)  # connection 3
            await _post(transport, server.url)  # reuses 3
            await transport.aclose()
            return server.connections

    assert asyncio.run(scenario()) == 3


def test_a_silent_server_is_a_read_timeout() -> None:
    async def scenario() -> float:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int):
            await _read_request(reader)
            await asyncio.sleep(5)

        async with Server(silent) as server:
            transport = Http11Transport()
            request = httpx.Request(
                "POST",
                server.url,
                content=b"{}",
                extensions={"timeout": httpx.Timeout(0.2).as_dict()},
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                await transport.handle_async_request(request)
            took = loop.time() - started
            await transport.aclose()
            return took

    assert 0.15 < asyncio.run(scenario()) < 1.0


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        transport = Http11Transport()
        with pytest.raises(httpx.ConnectError):
            await _post(transport, f"http://127.0.0.1:{port}")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "header",
    [
        (b"X-Bad", b"a\r\nInjected: 1"),  # a line break: a second header smuggled in
        (b"Transfer-Encoding", b"chunked"),  # a body in memory goes whole, with its length
    ],
)
def test_a_header_http_cannot_carry_is_refused_before_anything_is_sent(
    header: tuple[bytes, bytes],
) -> None:
    async def scenario() -> int:
        async with Server() as server:
            transport = Http11Transport()
            request = httpx.Request("POST", server.url, content=b"{}", headers=[header])
            request.extensions = TIMEOUTS
            with pytest.raises(httpx.LocalProtocolError):
                await transport.handle_async_request(request)
            await asyncio.sleep(0.05)
            await transport.aclose()
            return len(server.requests)

    assert asyncio.run(scenario()) == 0


def test_https_is_verified_as_httpx_verifies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed(tmp_path)

    async def scenario() -> bytes:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await _read_request(reader)
                writer.write(_answer(b'{"tls":true}'))
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        tls = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
        url = f"https://localhost:{tls.sockets[0].getsockname()[1]}"
        try:
            # Not trusted: refused before a byte of the request is sent.
            with pytest.raises(httpx.ConnectError):
                await _post(Http11Transport(), url)
            # Trusted through SSL_CERT_FILE, which httpx's verification honours.
            monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
            trusted = Http11Transport()
            answer = await _post(trusted, url)
            await trusted.aclose()
            return answer.content
        finally:
            tls.close()

    assert asyncio.run(scenario()) == b'{"tls":true}'


def test_a_body_without_length_is_read_until_the_server_closes() -> None:
    async def scenario() -> bytes:
        async def old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
            await writer.drain()

        async with Server(old) as server:
            transport = Http11Transport()
            answer = await _post(transport, server.url)
            await transport.aclose()
            return answer.content

    assert asyncio.run(scenario()) == b"all of it"


def test_a_fast_stream_to_a_slow_reader_waits_in_the_socket_not_in_memory() -> None:
    async def scenario() -> tuple[int, int]:
        sent = 0

        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            nonlocal sent
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            for _ in range(512):  # 32 MiB, far more than the socket buffers hold
                writer.write(piece)
                await writer.drain()
                sent += 65536
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        async with Server(flood) as server:
            transport = Http11Transport()
            request = httpx.Request("POST", server.url, content=b"{}", extensions=TIMEOUTS)
            response = await transport.handle_async_request(request)
            await asyncio.sleep(0.5)  # the reader reads nothing for a while
            held = sent
            total = 0
            async for piece in response.aiter_raw():
                total += len(piece)
            await transport.aclose()
            return held, total

    held, total = asyncio.run(scenario())
    assert total == 512 * 65536
    assert held < 16 * 1024 * 1024, f"{held} bytes were taken from the server unread"


def test_an_informational_answer_before_the_real_one_is_skipped() -> None:
    async def scenario() -> tuple[int, bytes, int]:
        async def hundred(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int):
            while True:
                await _read_request(reader)
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + _answer(b'{"after":100}'))
                await writer.drain()

        async with Server(hundred) as server:
            transport = Http11Transport()
            first = await _post(transport, server.url)
            await _post(transport, server.url)  # the same connection serves the next
            await transport.aclose()
            return first.status_code, first.content, server.connections

    assert asyncio.run(scenario()) == (200, b'{"after":100}', 1)


def test_headers_that_never_end_are_cut_off_at_the_limit() -> None:
    async def scenario() -> int:
        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for n in range(100_000):  # 2 MB of headers, and no end to them
                writer.write(b"X-Filler-%d: %s\r\n" % (n, b"f" * 8))
                if n % 1000 == 0:
                    await writer.drain()
            await asyncio.sleep(5)

        async with Server(endless) as server:
            transport = Http11Transport()
            with pytest.raises(httpx.RemoteProtocolError, match="headers are too long"):
                await _post(transport, server.url)
            await transport.aclose()
            return server.connections

    assert asyncio.run(scenario()) == 1


def test_bytes_that_are_not_http_are_a_protocol_error() -> None:
    async def scenario() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int):
            await _read_request(reader)
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(1)

        async with Server(garbage) as server:
            transport = Http11Transport()
            with pytest.raises(httpx.RemoteProtocolError, match=r"not HTTP/1\.1"):
                await _post(transport, server.url)
            await transport.aclose()

    asyncio.run(scenario())


def test_an_answer_nobody_asked_for_retires_its_connection() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int):
            while True:
                await _read_request(reader)
                writer.write(_answer(b'{"conn":%d}' % n))
                await writer.drain()
                if n == 1:  # a second answer, unasked: must never pass for the next one's
                    await asyncio.sleep(0.05)
                    writer.write(_answer(b'{"stray":true}'))
                    await writer.drain()

        async with Server(chatty) as server:
            transport = Http11Transport()
            first = await _post(transport, server.url)
            await asyncio.sleep(0.2)
            second = await _post(transport, server.url)
            await transport.aclose()
            return [first.content, second.content], server.connections

    assert asyncio.run(scenario()) == ([b'{"conn":1}', b'{"conn":2}'], 2)


def test_a_compressed_answer_is_read_decoded_and_a_plain_one_as_sent() -> None:
    async def scenario() -> list[bytes]:
        async def both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int):
            await _read_request(reader)
            zipped = gzip.compress(b'{"zipped":true}')
            writer.write(_answer(zipped, b"Content-Encoding: gzip\r\n"))
            await _read_request(reader)
            writer.write(_answer(b'{"plain":true}'))
            await writer.drain()
            await asyncio.sleep(1)

        async with Server(both) as server:
            transport = Http11Transport()
            bodies = []
            for _ in range(2):
                request = httpx.Request("POST", server.url, content=b"{}", extensions=TIMEOUTS)
                response = await transport.handle_async_request(request)
                bodies.append(await read_capped(response))
                await response.aclose()
            await transport.aclose()
            return bodies

    assert asyncio.run(scenario()) == [b'{"zipped":true}', b'{"plain":true}']
