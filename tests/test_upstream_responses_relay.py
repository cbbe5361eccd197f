"""The Responses relay closes its upstream however it ends, and redacts what it passes on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from lib.upstream import relay_response_events
from tests.conftest import CANARY_TOKEN
from tests.test_upstream_chat_relay import FakeStream, relay_to_a_caller_who_stops_reading

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def named(kind: str, sequence: int, **fields: object) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {data}".encode()


PAYLOAD = {"model": "m", "input": "x" * 40}


class RecordingMeter:
    """A `Meter` that keeps what it was asked to charge."""

    def __init__(self) -> None:
        self.charges: list[tuple[object, int]] = []

    async def charge(
        self, usage: object, *, payload: dict | None = None, answer_chars: int = 0
    ) -> None:
        assert payload is PAYLOAD
        self.charges.append((usage, answer_chars))


def relay(stream: FakeStream, meter: RecordingMeter | None = None) -> AsyncIterator[bytes]:
    return relay_response_events(stream, meter or RecordingMeter(), PAYLOAD)


EVENTS = [
    named("response.created", 0, response={}),
    named("response.output_text.delta", 1, delta="Hi"),
    named("response.completed", 2, response={"usage": {"total_tokens": 3}}),
]


async def test_a_caller_who_goes_mid_stream_closes_the_upstream_and_is_charged_the_text_sent() -> (
    None
):
    stream = FakeStream(EVENTS)
    meter = RecordingMeter()
    events = relay(stream, meter)
    await anext(events)
    await anext(events)  # the delta: "Hi"
    await events.aclose()  # what the server does when the caller hangs up
    assert stream.closed == 1
    assert meter.charges == [(None, 2)]


@pytest.mark.parametrize(
    "script",
    [EVENTS, EVENTS[:2], [named("error", 0, message="boom")], [b"data: {broken"]],
    ids=["complete", "cut", "error event", "not JSON"],
)
async def test_relay_closes_the_upstream_when_it_ends_or_breaks(script: list[bytes]) -> None:
    stream = FakeStream(script)
    meter = RecordingMeter()
    pieces = [piece async for piece in relay(stream, meter)]
    assert stream.closed == 1
    complete = script is EVENTS
    assert pieces[-1].startswith(b"event: error\n") != complete
    # Charged however it ends: the terminal usage, or the text of the deltas relayed.
    usage = {"total_tokens": 3} if complete else None
    relayed = 2 if len(script) > 1 else 0
    assert meter.charges[0] == (usage, relayed)


async def test_error_event_text_is_redacted_before_it_is_cut() -> None:
    message = "x" * 280 + f" token {CANARY_TOKEN} refused"
    stream = FakeStream([EVENTS[0], named("error", 1, error={"message": message})])
    pieces = b"".join([piece async for piece in relay(stream)])
    last = json.loads(pieces.rstrip().rsplit(b"\n\n", 1)[-1].split(b"data: ", 1)[1])
    assert last["message"].startswith("The upstream failed mid-stream: xxx")
    for start in range(len(CANARY_TOKEN) - 11):
        assert CANARY_TOKEN[start : start + 12] not in last["message"]


async def test_a_send_that_does_not_finish_ends_the_response_closes_the_upstream_and_charges() -> (
    None
):
    stream = FakeStream(EVENTS, idle_s=0.3)
    meter = RecordingMeter()
    await relay_to_a_caller_who_stops_reading(relay(stream, meter), stream)
    assert meter.charges == [(None, 0)]  # the stalled caller got no delta: the prompt alone
