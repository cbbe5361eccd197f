"""Relays close their upstream stream however they end; sends to a caller are bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lib.access import AccessControl, AccessRecord, Caller
from lib.upstream import EventStreamResponse, relay_chat_events, relay_generate_events
from lib.upstream.redaction import Redactor
from tests.conftest import AUTH, CANARY_TOKEN, chunk, make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeStream:
    """An upstream stream that hands out scripted event blocks and records its closing."""

    def __init__(self, events: list[bytes], *, deadline_in_s: float = 60, idle_s: float = 60):
        self._events = events
        self.closed = 0
        self.deadline = asyncio.get_running_loop().time() + deadline_in_s
        self.idle_timeout_s = idle_s

    async def event_batches(self) -> AsyncIterator[list[bytes]]:
        for event in self._events:
            await asyncio.sleep(0)
            yield [event]

    async def events(self) -> AsyncIterator[bytes]:
        async for batch in self.event_batches():
            for block in batch:
                yield block

    def reason(self, text: str) -> str:
        return Redactor(CANARY_TOKEN).reason(text)

    async def aclose(self) -> None:
        self.closed += 1


def caller(keys_toml: str | None = None) -> Caller:
    """The test key's caller; with `keys_toml`, its defaults apply to it."""
    access = AccessControl(make_settings(keys_toml=keys_toml))
    key = access.keys.identify(AUTH["Authorization"])  # a key: no token to verify
    return Caller(key, access.limiter, AccessRecord(key.name))


PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "12345678"}]}


def chat(stream: FakeStream, who: Caller | None = None) -> AsyncIterator[bytes]:
    return relay_chat_events(stream, who or caller(), PAYLOAD, show_usage=False)


def generate(stream: FakeStream, who: Caller | None = None) -> AsyncIterator[bytes]:
    return relay_generate_events(stream, who or caller(), PAYLOAD)


def data(event: dict | str) -> bytes:
    return b"data: " + (event if isinstance(event, str) else json.dumps(event)).encode()


CHUNKS = [data(chunk("Hello")), data(chunk(" world")), data(chunk(None, "stop")), data("[DONE]")]


@pytest.mark.parametrize("relay", ["chat", "generate"])
async def test_relay_closes_the_upstream_when_the_caller_goes_after_the_first_piece(
    relay: str,
) -> None:
    stream = FakeStream(CHUNKS)
    who = caller("[defaults]\ntpm = 1000\n")
    events = chat(stream, who) if relay == "chat" else generate(stream, who)
    await anext(events)
    await events.aclose()  # what the server does when the caller hangs up
    assert stream.closed == 1
    # No usage arrived: the prompt (8 characters) and "Hello" relayed, at 4 characters a token.
    assert (who.record.prompt_tokens, who.record.completion_tokens) == (2, 2)


@pytest.mark.parametrize("relay", ["chat", "generate"])
async def test_relay_closes_the_upstream_when_it_ends_or_breaks(relay: str) -> None:
    for script in (CHUNKS, CHUNKS[:2], [data({"error": "boom"})], [b"data: {broken"]):
        stream = FakeStream(script)
        events = chat(stream) if relay == "chat" else generate(stream)
        pieces = [piece async for piece in events]
        assert stream.closed == 1
        assert pieces[-1].endswith(b"data: [DONE]\n\n") == (script is CHUNKS)


async def test_mid_stream_error_text_is_redacted_before_it_is_cut() -> None:
    message = "x" * 280 + f" token {CANARY_TOKEN} refused"
    stream = FakeStream([data(chunk("Hi")), data({"error": {"message": message}})])
    pieces = b"".join([piece async for piece in chat(stream)])
    last = json.loads(pieces.rstrip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: "))
    assert "The upstream failed mid-stream" in last["error"]["message"]
    for start in range(len(CANARY_TOKEN) - 11):
        assert CANARY_TOKEN[start : start + 12] not in last["error"]["message"]


async def _never_reading_send(message: dict) -> None:
    if message["type"] == "http.response.body":
        await asyncio.Event().wait()  # a caller whose socket buffers are full


async def _no_disconnect() -> dict:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


@pytest.mark.parametrize(("deadline_in_s", "idle_s"), [(0.3, 60.0), (60.0, 0.3)])
async def test_a_send_that_does_not_finish_ends_the_response_and_closes_the_upstream(
    deadline_in_s: float, idle_s: float
) -> None:
    stream = FakeStream(CHUNKS, deadline_in_s=deadline_in_s, idle_s=idle_s)
    await relay_to_a_caller_who_stops_reading(chat(stream), stream)


async def relay_to_a_caller_who_stops_reading(events: Any, stream: FakeStream) -> None:
    """Relay `events` to a caller who never reads: the response must end within its bounds,
    close the upstream once, and mark the caller as stalled for the log line."""
    response = EventStreamResponse(events, stream)
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "state": {}}
    async with asyncio.timeout(10):  # far beyond every bound: a hang fails here
        await response(scope, _no_disconnect, _never_reading_send)
    assert stream.closed == 1
    assert scope["state"]["caller_stalled"] is True
