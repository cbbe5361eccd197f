"""Bad days, over real sockets: a misbehaving stand-in upstream, the proxy under uvicorn.

Each case checks the status and body the caller gets, how many attempts reached the
upstream, and that the answer came within the request deadline.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from lib.app import create_app
from lib.standin import Fault, StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN, LogCollector, make_settings
from tests.servers import serve_on_loopback

DEADLINE_S = 3.0
IDLE_S = 1.0
# Room for a loaded, shared 2-core runner: bounds are the deadline plus this, never tight.
MARGIN_S = 1.5
# How soon a hang-up must close the upstream: well before the deadline would close it anyway
# (DEADLINE_S after the request began), with room for a loaded runner.
HANG_UP_BOUND_S = 1.5
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@dataclass
class Rig:
    """The proxy and a scriptable stand-in, on loopback."""

    url: str
    standin: StandinState
    log_lines: list[str]

    def chat(self, faults: list[Fault], **body: object) -> tuple[httpx.Response, int, float]:
        """POST a chat request; return the response, upstream attempts and seconds taken."""
        self.standin.faults[:] = faults
        before = len(self.standin.received)
        started = time.monotonic()
        response = httpx.post(
            f"{self.url}/v1/chat/completions", json={**HELLO, **body}, headers=AUTH, timeout=30
        )
        return response, len(self.standin.received) - before, time.monotonic() - started


@pytest.fixture(scope="module", params=["builtin", "aiohttp", "httpx"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The rig, once per upstream transport: each bad day must look the same through both."""
    state = StandinState(token=CANARY_TOKEN)
    collector = LogCollector()
    logger = logging.getLogger("promptgate")
    with serve_on_loopback(create_standin_app(state), log_level="critical") as standin_url:
        settings = make_settings(
            hf_base_url=standin_url,
            request_timeout_s=DEADLINE_S,
            stream_idle_timeout_s=IDLE_S,
            upstream_max_attempts=3,
            upstream_transport=request.param,
        )
        logger.addHandler(collector)
        try:
            with serve_on_loopback(create_app(settings)) as url:
                yield Rig(url, state, collector.lines)
        finally:
            logger.removeHandler(collector)


def log_line_of(rig: Rig, request_id: str) -> dict:
    """The access-log line of a request; it is written just after the response is sent."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for line in reversed(rig.log_lines):
            if f'"request_id":"{request_id}"' in line:
                return json.loads(line)
        time.sleep(0.01)
    raise AssertionError(f"no log line for {request_id}")


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def sse_events(text: str) -> list[str]:
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block]


def test_hanging_upstream_returns_504_within_the_deadline(rig: Rig) -> None:
    response, attempts, took = rig.chat([Fault(delay_s=30)])
    assert response.status_code == 504
    assert error_of(response)["type"] == "timeout_error"
    assert attempts == 1
    assert DEADLINE_S - 0.1 < took < DEADLINE_S + MARGIN_S
    time.sleep(0.3)
    assert rig.standin.hangups, "the proxy should have closed its upstream connection"


def test_slow_first_byte_within_the_deadline_is_served(rig: Rig) -> None:
    response, attempts, took = rig.chat([Fault(delay_s=1.0)])
    assert response.status_code == 200 and attempts == 1
    assert 1.0 <= took < DEADLINE_S


def test_stream_silent_longer_than_idle_limit_ends_with_timeout_event(rig: Rig) -> None:
    response, _, took = rig.chat([Fault(chunk_delay_s=IDLE_S + 1)], stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert json.loads(events[-1])["error"]["type"] == "timeout_error"
    assert "[DONE]" not in events
    assert took < IDLE_S + MARGIN_S


def test_stream_longer_than_the_deadline_ends_with_timeout_event(rig: Rig) -> None:
    response, _, took = rig.chat([Fault(chunk_delay_s=0.5)], stream=True)
    events = sse_events(response.text)
    assert len(events) > 3  # it did stream for a while
    assert json.loads(events[-1])["error"]["type"] == "timeout_error"
    assert took < DEADLINE_S + MARGIN_S


def test_connection_reset_mid_body_returns_502_without_retry(rig: Rig) -> None:
    response, attempts, _ = rig.chat([Fault(reset_after=5)])
    assert response.status_code == 502
    assert error_of(response)["type"] == "upstream_error"
    assert attempts == 1


def test_connection_reset_mid_stream_ends_with_error_event(rig: Rig) -> None:
    response, _, _ = rig.chat([Fault(reset_after=3)], stream=True)
    events = sse_events(response.text)
    assert "broke mid-stream" in json.loads(events[-1])["error"]["message"]
    assert "[DONE]" not in events


def test_stream_cut_short_ends_with_error_event(rig: Rig) -> None:
    response, _, _ = rig.chat([Fault(cut_after=2)], stream=True)
    events = sse_events(response.text)
    assert "ended before it was complete" in json.loads(events[-1])["error"]["message"]
    assert "[DONE]" not in events


def test_rate_limit_with_retry_after_that_fits_is_retried(rig: Rig) -> None:
    response, attempts, took = rig.chat([Fault(status=429, headers={"Retry-After": "1"})])
    assert response.status_code == 200 and attempts == 2
    assert 1.0 <= took < DEADLINE_S


def test_rate_limit_with_retry_after_beyond_deadline_is_passed_on_at_once(rig: Rig) -> None:
    response, attempts, took = rig.chat([Fault(status=429, headers={"Retry-After": "60"})])
    assert response.status_code == 429 and attempts == 1
    assert response.headers["retry-after"] == "60"
    assert error_of(response)["type"] == "rate_limit_error"
    assert took < DEADLINE_S


def test_rate_limit_with_http_date_retry_after_is_honoured(rig: Rig) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    response, attempts, took = rig.chat([Fault(status=429, headers={"Retry-After": when})])
    assert response.status_code == 200 and attempts == 2
    assert 0.9 <= took < DEADLINE_S


def test_rate_limit_without_retry_after_gives_up_after_three_attempts(rig: Rig) -> None:
    response, attempts, took = rig.chat([Fault(status=429)] * 3)
    assert response.status_code == 429 and attempts == 3
    assert "retry-after" not in response.headers
    assert took < DEADLINE_S


def test_loading_model_503_waits_estimated_time(rig: Rig) -> None:
    loading = b'{"error": "Model is currently loading", "estimated_time": 1.0}'
    response, attempts, took = rig.chat([Fault(status=503, body=loading)])
    assert response.status_code == 200 and attempts == 2
    assert 1.0 <= took < DEADLINE_S


def test_flapping_502s_are_retried_until_success(rig: Rig) -> None:
    response, attempts, took = rig.chat([Fault(status=502), Fault(status=502)])
    assert response.status_code == 200 and attempts == 3
    assert took < DEADLINE_S
    line = log_line_of(rig, response.headers["x-request-id"])
    assert line["attempts"] == 3 and line["upstream_status"] == 200


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        (Fault(status=401), 502, "upstream_error"),
        (Fault(status=402), 402, "insufficient_quota"),
        (Fault(status=404), 404, "not_found_error"),
        (Fault(status=400), 400, "invalid_request_error"),
        (Fault(status=422), 422, "invalid_request_error"),
        (Fault(body=b"<html>oops</html>", content_type="text/html"), 502, "upstream_error"),
        (Fault(body=b'{"choices": 7}'), 502, "upstream_error"),
    ],
)
def test_failures_that_retrying_cannot_fix_are_answered_at_once(
    rig: Rig, fault: Fault, status: int, error_type: str
) -> None:
    response, attempts, took = rig.chat([fault, fault, fault])
    assert response.status_code == status and attempts == 1
    assert error_of(response)["type"] == error_type
    assert took < DEADLINE_S


def test_huge_upstream_body_is_refused_not_buffered_whole(rig: Rig) -> None:
    response, _, _ = rig.chat([Fault(body=b"[" + b"1," * 9_000_000 + b"1]")])
    assert response.status_code == 502
    assert "larger than" in error_of(response)["message"]


def test_broken_sse_lines_end_the_stream_with_error_event(rig: Rig) -> None:
    garbage = b'data: {"choices": [}\n\ndata: [DONE]\n\n'
    response, _, _ = rig.chat([Fault(body=garbage, content_type="text/event-stream")], stream=True)
    events = sse_events(response.text)
    assert "not JSON" in json.loads(events[-1])["error"]["message"]
    assert "[DONE]" not in events


@pytest.mark.parametrize("transport", ["builtin", "aiohttp", "httpx"])
def test_unreachable_upstream_is_retried_then_502(transport: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = make_settings(
        hf_base_url=f"http://127.0.0.1:{closed_port}",
        request_timeout_s=DEADLINE_S,
        upstream_max_attempts=3,
        upstream_transport=transport,
    )
    collector = LogCollector()
    logger = logging.getLogger("promptgate")
    logger.addHandler(collector)
    try:
        with serve_on_loopback(create_app(settings)) as url:
            started = time.monotonic()
            response = httpx.post(f"{url}/v1/chat/completions", json=HELLO, headers=AUTH)
            took = time.monotonic() - started
    finally:
        logger.removeHandler(collector)
    assert response.status_code == 502
    assert error_of(response)["message"] == "Could not connect to the upstream."
    assert json.loads(collector.lines[-1])["attempts"] >= 2
    assert took < DEADLINE_S


def test_caller_hanging_up_mid_stream_closes_the_upstream_at_once(rig: Rig) -> None:
    rig.standin.faults[:] = [Fault(chunk_delay_s=0.1)]
    ends_before = len(rig.standin.stream_ends)
    body = {**HELLO, "stream": True, "max_tokens": 1000}
    with httpx.stream("POST", f"{rig.url}/v1/chat/completions", json=body, headers=AUTH) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        hung_up_at = time.monotonic()
    deadline = hung_up_at + HANG_UP_BOUND_S
    while len(rig.standin.stream_ends) == ends_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(rig.standin.stream_ends) > ends_before, "upstream stream still open"
    end = rig.standin.stream_ends[-1]
    assert not end.completed and end.at - hung_up_at < HANG_UP_BOUND_S


def test_caller_hanging_up_while_waiting_closes_the_upstream_at_once(rig: Rig) -> None:
    rig.standin.faults[:] = [Fault(delay_s=10)]
    hangups_before = len(rig.standin.hangups)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{rig.url}/v1/chat/completions", json=HELLO, headers=AUTH, timeout=0.5)
    gave_up_at = time.monotonic()
    wait_until = gave_up_at + HANG_UP_BOUND_S
    while len(rig.standin.hangups) == hangups_before and time.monotonic() < wait_until:
        time.sleep(0.02)
    assert len(rig.standin.hangups) > hangups_before, "upstream still waited on"
    assert rig.standin.hangups[-1] - gave_up_at < HANG_UP_BOUND_S
    deadline = time.monotonic() + 2
    while '"status":499' not in (rig.log_lines[-1] if rig.log_lines else ""):
        assert time.monotonic() < deadline, "no log line for the hung-up request"
        time.sleep(0.02)
    assert json.loads(rig.log_lines[-1])["client_disconnected"] is True


@pytest.mark.parametrize(
    "fault",
    [Fault(cut_after=2), Fault(reset_after=2), Fault(error_after=2), Fault(chunk_delay_s=0.9)],
)
def test_generate_stream_that_breaks_ends_with_an_error_event_never_done(
    rig: Rig, fault: Fault
) -> None:
    """The playground shows this stream: a cut answer must not look complete."""
    rig.standin.faults[:] = [fault]
    response = httpx.post(
        f"{rig.url}/api/generate",
        json={"prompt": "one two three four five", "stream": True},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert "[DONE]" not in events
    assert json.loads(events[0]) == {"text": "Hello"}
    last = json.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
