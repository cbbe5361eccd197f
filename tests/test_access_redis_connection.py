"""The limit store's Redis connection: the protocol read and written, against a real
redis-server (password, user, database, TLS, a server that drops us, forgets its scripts
or goes quiet), and the store's settlements that are sent without waiting."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.access.redis_connection import (
    RedisConnection,
    RedisReplyError,
    _RespProtocol,
    encode_command,
)
from lib.access.redis_store import RedisStore
from lib.access.stores import Account, Verdict, Windows
from lib.errors import LimitStoreError
from tests.certificates import self_signed
from tests.redis_server import RedisServer, run_redis_server

PASSWORD = "pg_test_canary_redis_conn_password"
WINDOWS = Windows((Account("t:m", "t:d", tpm=1_000),), None, -1, 120, 172_800, 0.0)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with run_redis_server(password=PASSWORD) as server:
        yield server


def _minute_tokens(server: RedisServer) -> str:
    return server.command("HGET", "t:m", "t").split("\r\n")[1]


class _Wire:
    """A transport that keeps what is written, for a protocol fed replies by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _replies(chunks: list[bytes], commands: int) -> list[object]:
    """What `commands` waiting futures get when the server sends `chunks`, one read each
    (an exception where the future failed)."""

    async def run() -> list[object]:
        protocol = _RespProtocol(asyncio.get_running_loop())
        protocol.connection_made(_Wire())  # type: ignore[arg-type]
        futures = protocol.send(encode_command("PING"), commands)
        for chunk in chunks:
            protocol.data_received(chunk)
        return [f.exception() or f.result() if f.done() else "waiting" for f in futures]

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b":42\r\n", 42),
        (b":-7\r\n", -7),
        (b"+OK\r\n", b"OK"),
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*3\r\n:1\r\n$2\r\nab\r\n*1\r\n:2\r\n", [1, b"ab", [2]]),
        (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string may hold CRLF
    ],
)
def test_replies_are_parsed_whole_and_the_next_one_located(raw: bytes, value: object) -> None:
    assert _replies([raw + b":9\r\n"], 2) == [value, 9]


@pytest.mark.parametrize("raw", [b":4", b"$5\r\nhel", b"$5\r\nhello\r", b"*2\r\n:1\r\n"])
def test_a_reply_cut_short_waits_for_more(raw: bytes) -> None:
    assert _replies([raw], 1) == ["waiting"]
    # The rest, in another read, completes it; a reply split at every byte still arrives.
    whole = b"*2\r\n:1\r\n$2\r\nab\r\n"
    assert _replies([whole[i : i + 1] for i in range(len(whole))], 1) == [[1, b"ab"]]


def test_an_error_reply_fails_only_its_own_command_with_its_kind() -> None:
    error, after = _replies([b"-NOSCRIPT No matching script\r\n:1\r\n"], 2)
    assert isinstance(error, RedisReplyError)
    assert error.code == "NOSCRIPT"
    assert after == 1


@pytest.mark.parametrize(
    ("raw", "first"), [(b"!garbage\r\n", ConnectionError), (b":1\r\n:2\r\n", 1)]
)
def test_an_unreadable_or_unasked_for_reply_fails_the_connection(raw: bytes, first: object) -> None:
    # The second: a reply with no command waiting means the two sides no longer agree.
    (reply,) = _replies([raw], 1)
    if first is ConnectionError:
        assert isinstance(reply, ConnectionError)
        assert "unreadable reply from Redis" in str(reply)
    else:
        assert reply == first

    async def lost_after(chunk: bytes) -> bool:
        wire = _Wire()
        protocol = _RespProtocol(asyncio.get_running_loop())
        protocol.connection_made(wire)  # type: ignore[arg-type]
        protocol.send(encode_command("PING"), 1)
        protocol.data_received(chunk)
        return protocol.lost and wire.closed

    assert asyncio.run(lost_after(raw))


def test_commands_are_bulk_string_arrays() -> None:
    assert encode_command("SET", "k", 12, b"\r\n") == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\r\n\r\n"
    )


def test_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    async def run() -> tuple[object, object]:
        connection = RedisConnection(redis_server.url.replace("/0", "/3"))
        await connection.execute("SET", "in-db-3", "yes")
        value = await connection.execute("GET", "in-db-3")
        await connection.aclose()
        return value, None

    assert asyncio.run(run())[0] == b"yes"
    assert "$-1" in redis_server.command("GET", "in-db-3")  # not in database 0


def test_a_named_user_authenticates_and_a_wrong_password_is_an_error_reply(
    redis_server: RedisServer,
) -> None:
    async def run(url: str) -> object:
        connection = RedisConnection(url)
        try:
            return await connection.execute("PING")
        finally:
            await connection.aclose()

    port = redis_server.port
    assert asyncio.run(run(f"redis://default:{PASSWORD}@127.0.0.1:{port}")) == b"PONG"
    with pytest.raises(RedisReplyError) as refused:
        asyncio.run(run(f"redis://:pg_test_canary_wrong@127.0.0.1:{port}"))
    assert refused.value.code in ("WRONGPASS", "ERR")
    with pytest.raises(RedisReplyError) as anonymous:
        asyncio.run(run(f"redis://127.0.0.1:{port}"))
    assert anonymous.value.code == "NOAUTH"


def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    redis_server: RedisServer,
) -> None:
    async def run() -> list[object]:
        connection = RedisConnection(redis_server.url)
        replies = await asyncio.gather(
            *(connection.execute("INCRBY", f"n{i % 3}", i) for i in range(60))
        )
        await connection.aclose()
        return replies

    replies = asyncio.run(run())
    clients = redis_server.command("INFO", "clients")
    assert all(isinstance(r, int) for r in replies)
    assert sorted(replies)[-1] == sum(range(2, 60, 3))
    assert "connected_clients:1" in clients  # the test's own connection only, after aclose
    assert redis_server.command("GET", "n2").split("\r\n")[1] == str(sum(range(2, 60, 3)))


def test_commands_awaited_in_one_step_reach_the_server_in_one_write(
    redis_server: RedisServer,
) -> None:
    def reads() -> int:
        stats = redis_server.command("INFO", "stats")
        return int(stats.split("total_reads_processed:")[1].split("\r\n")[0])

    async def run() -> tuple[list[object], int]:
        connection = RedisConnection(redis_server.url)
        await connection.execute("PING")  # connected: what follows only writes
        asking = -reads() + reads()  # what one look at the counter costs (AUTH, INFO)
        before = reads()
        replies = await asyncio.gather(
            *(connection.execute("INCRBY", "batched", i) for i in range(1, 41))
        )
        read_by_server = reads() - before - asking
        await connection.aclose()
        return replies, read_by_server

    replies, read_by_server = asyncio.run(run())
    assert sorted(replies) == [sum(range(1, n + 1)) for n in range(1, 41)]  # type: ignore[type-var]
    # One write for forty commands (the server may take it in two reads, not forty).
    assert read_by_server <= 2


def test_a_connection_the_server_drops_is_replaced_on_the_next_call(
    redis_server: RedisServer,
) -> None:
    async def run() -> object:
        connection = RedisConnection(redis_server.url)
        await connection.execute("CLIENT", "SETNAME", "promptgate-test")
        redis_server.command("CLIENT", "KILL", "SKIPME", "yes")
        await asyncio.sleep(0.1)  # the close reaches us
        try:
            return await connection.execute("PING")
        finally:
            await connection.aclose()

    assert asyncio.run(run()) == b"PONG"


def test_an_idle_connection_is_checked_before_use_and_replaced_when_dead(
    redis_server: RedisServer,
) -> None:
    async def run() -> tuple[object, object]:
        connection = RedisConnection(redis_server.url, idle_check_s=0.0)
        await connection.execute("CLIENT", "SETNAME", "first")
        first = await connection.execute("CLIENT", "GETNAME")
        # Killed without our noticing: the check finds it and a new connection serves.
        protocol = connection._protocol
        assert protocol is not None
        protocol._transport.abort()  # type: ignore[union-attr]
        protocol.lost = False  # as if the close had not been seen
        second = await connection.execute("CLIENT", "GETNAME")
        await connection.aclose()
        return first, second

    assert asyncio.run(run()) == (b"first", None)


def test_the_store_sends_a_script_the_server_forgot_in_full(redis_server: RedisServer) -> None:
    async def run() -> tuple[Verdict, Verdict]:
        store = RedisStore(redis_server.url, timeout_s=2)
        first = (await store.admit(WINDOWS, 10)).verdict
        redis_server.command("SCRIPT", "FLUSH")
        second = (await store.admit(WINDOWS, 10)).verdict
        redis_server.command("SCRIPT", "FLUSH")
        await store.add_tokens(WINDOWS, -15)
        await asyncio.sleep(0.3)  # the settlement's NOSCRIPT, then its EVAL
        await store.aclose()
        return first, second

    assert asyncio.run(run()) == (Verdict.ADMITTED, Verdict.ADMITTED)
    assert _minute_tokens(redis_server) == "5"


def test_a_settlement_is_counted_before_the_next_request_of_any_instance(
    redis_server: RedisServer,
) -> None:
    """add_tokens does not wait for Redis's answer; its command is written as this step of
    the event loop ends, before the loop reads any socket again (so before any later request
    is read): a read from another connection after that step sees it."""

    async def run() -> list[str]:
        store = RedisStore(redis_server.url, timeout_s=2)
        seen = []
        for _ in range(20):
            assert (await store.admit(WINDOWS, 10)).verdict is Verdict.ADMITTED
            await store.add_tokens(WINDOWS, -10)
            await asyncio.sleep(0)  # the rest of this step
            seen.append(_minute_tokens(redis_server))
        await store.aclose()
        return seen

    assert asyncio.run(run()) == ["0"] * 20


def test_a_lost_settlement_is_logged_once_without_the_url(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        store = RedisStore(redis_server.url, timeout_s=2, logger=logging.getLogger("pg-test"))
        await store.admit(WINDOWS, 10)
        # A settlement the server refuses (a key of the wrong type) is logged, not raised.
        redis_server.command("SET", "t:m", "not-a-hash")
        for _ in range(3):
            await store.add_tokens(WINDOWS, -5)
        await asyncio.sleep(0.2)
        await store.aclose()

    with caplog.at_level(logging.WARNING, logger="pg-test"):
        asyncio.run(run())
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pg-test"]
    assert len(lines) == 1
    assert lines[0]["event"] == "limit_store_failed"
    assert "not settled" in lines[0]["action"]
    assert PASSWORD not in caplog.text and str(redis_server.port) not in caplog.text


def test_a_frozen_server_costs_a_call_its_bound_and_the_next_call_reconnects(
    redis_server: RedisServer,
) -> None:
    async def run() -> tuple[float, Verdict]:
        store = RedisStore(redis_server.url, timeout_s=0.5)
        await store.admit(WINDOWS, 1)
        loop = asyncio.get_running_loop()
        with redis_server.stopped():
            started = loop.time()
            with pytest.raises(LimitStoreError):
                await store.admit(WINDOWS, 1)
            waited = loop.time() - started
        verdict = (await store.admit(WINDOWS, 1)).verdict
        await store.aclose()
        return waited, verdict

    waited, verdict = asyncio.run(run())
    assert 0.4 < waited < 2.0
    assert verdict is Verdict.ADMITTED


def test_rediss_verifies_the_certificate_and_speaks_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    with run_redis_server(password=PASSWORD, tls=(str(cert_file), str(key_file))) as server:
        url = f"rediss://:{PASSWORD}@localhost:{server.tls_port}"

        async def ping() -> object:
            connection = RedisConnection(url)
            try:
                return await connection.execute("PING")
            finally:
                await connection.aclose()

        # Not trusted (the system's CAs only): refused, never spoken to in the clear.
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(ping())
        # Trusted as the system's CAs are (SSL_CERT_FILE, read by OpenSSL's defaults).
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        assert asyncio.run(ping()) == b"PONG"
