"""A property of spend control, over the chat, Responses and task routes: whatever length
fields and types a caller sends, and however its requests end (answered, refused, hung up on,
broken by the upstream), the upstream never receives a completion limit above the key's cap,
and the key's day counter stays within the documented bound of what the upstream produced.

The proxy runs under uvicorn (h11) in front of the stand-in, on both stores; hypothesis draws
sequences of requests (derandomized, so a CI run is repeatable).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.standin import Fault
from tests.redis_server import RedisServer
from tests.test_spend_holes import AUTH, CAP, STANDIN_PREAMBLE, Live, live_proxy

LENGTH_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")
TASK = "/models/openai-community/gpt2/pipeline/text-generation"
PROMPTS = ("hi", "tell me about proxies", "a b c d e f g h i j k l m n o p q r s t u v w x y z")


@pytest.fixture(scope="module", params=["memory", "redis"])
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    with live_proxy(url) as proxy:
        yield proxy


def estimate(chars: int) -> int:
    return math.ceil(chars / 4)


def _answer_chars(prompt: str) -> int:
    """The most text the stand-in generates for `prompt` (it echoes up to 20 words)."""
    return len(STANDIN_PREAMBLE + " ".join(prompt.split()[:20]))


# Mostly values a cap check must hold (whole numbers up to and past the cap, as ints and as
# floats), and the odd ones it must refuse or ignore.
_VALUES = st.one_of(
    st.integers(1, CAP),
    st.integers(1, CAP).map(float),
    st.integers(-2, 3 * CAP),
    st.one_of(
        st.floats(0, 3 * CAP, allow_nan=False),
        st.sampled_from(["64", "1e9", "", "ten"]),
        st.booleans(),
        st.none(),
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    route = draw(st.sampled_from(["chat", "responses", "task"]))
    prompt = draw(st.sampled_from(PROMPTS))
    limits = draw(st.dictionaries(st.sampled_from(LENGTH_FIELDS), _VALUES, max_size=2))
    if route == "chat" and draw(st.booleans()):
        limits["n"] = draw(st.one_of(st.integers(-1, 5), st.sampled_from(["2", 2.0, None])))
    ending = draw(st.sampled_from(["answered", "answered", "upstream 500", "cut", "hang-up"]))
    stream = route != "task" and (ending in ("cut", "hang-up") or draw(st.booleans()))
    if route == "chat":
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], **limits}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        path = "/v1/chat/completions"
    elif route == "responses":
        body, path = {"input": prompt, **limits, "stream": stream}, "/v1/responses"
    else:
        body, path = {"inputs": prompt, "parameters": limits}, TASK
    return {"path": path, "body": body, "prompt": prompt, "ending": ending, "stream": stream}


@dataclass
class Bound:
    """What the day counter may have gained: at least `low`, at most `high` tokens."""

    low: int = 0
    high: int = 0

    def add(self, low: int, high: int | None = None) -> None:
        self.low += low
        self.high += low if high is None else high


def _check_limits_sent(path: str, sent: dict[str, Any]) -> None:
    """The completion limit the upstream got: present, whole, and within the cap."""
    where = sent.get("parameters") or {} if path == TASK else sent
    present = [where[name] for name in LENGTH_FIELDS if name in where]
    assert present, f"no completion limit reached the upstream: {sent}"
    choices = sent.get("n", 1)
    assert type(choices) is int and choices >= 1
    for value in present:
        assert type(value) is int and value >= 1 and value * choices <= CAP, sent


def _send(live: Live, request: dict[str, Any], bound: Bound) -> None:
    path, body, prompt = request["path"], request["body"], request["prompt"]
    ending = request["ending"]
    fault = {
        "upstream 500": Fault(status=500),
        "cut": Fault(cut_after=2),
        "hang-up": Fault(chunk_delay_s=0.05),
    }.get(ending)
    if fault is not None:
        live.state.faults.append(fault)
    received, ends = len(live.state.received), len(live.state.stream_ends)
    url = f"{live.url}{path}"
    text = ""
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as answer:
        status = answer.status_code
        for line in answer.iter_lines():
            text += line + "\n"
            if ending == "hang-up" and status == 200 and text.count("data: ") >= 3:
                break
    reached = len(live.state.received) > received
    if fault is not None and not reached:
        live.state.faults.remove(fault)  # refused by the proxy: the fault was never used
    if not reached:
        assert status in (400, 422), text
        return  # refused before the upstream: nothing counted
    _check_limits_sent(path, live.state.received[-1]["json"])
    if status != 200:
        assert ending == "upstream 500" and status == 502
        return  # failed before the upstream answered: the reservation was given back
    if request["stream"]:
        if ending != "answered":
            deadline = time.monotonic() + 10
            while len(live.state.stream_ends) <= ends and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.05)
            bound.add(
                estimate(len(prompt)), estimate(len(prompt)) + estimate(_answer_chars(prompt))
            )
            return
        totals = re.findall(r'"total_tokens": ?(\d+)', text)
        bound.add(int(totals[-1]))  # the usage the stream ended with
        return
    if path == TASK:
        generated = json.loads(text)[0]["generated_text"]
        bound.add(estimate(len(prompt)) + estimate(len(generated)))
    else:
        # A cut does nothing to an answer in one piece: it came whole, with its usage.
        bound.add(json.loads(text)["usage"]["total_tokens"])


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(requests(), min_size=1, max_size=4))
def test_no_request_sequence_gets_past_the_cap_or_the_documented_bound(
    live: Live, sequence: list[dict[str, Any]]
) -> None:
    before = live.spent_today()
    bound = Bound()
    for request in sequence:
        _send(live, request, bound)
    spent = live.spent_today() - before
    assert bound.low <= spent <= bound.high, (sequence, bound)
