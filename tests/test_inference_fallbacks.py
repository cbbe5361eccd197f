"""`with_fallbacks` on its own, with a fake `send` and the in-process breaker: which failures
move a request on, what the breaker skips, and what the answer is marked with."""

from __future__ import annotations

import asyncio

import pytest

from lib.access import Breaker, Hop
from lib.errors import (
    ProxyError,
    UpstreamAuthError,
    UpstreamCreditsError,
    UpstreamError,
    UpstreamModelNotFoundError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from lib.inference import FALLBACK_HEADER, with_fallbacks
from lib.upstream import UpstreamCall

A, B, C = Hop("org/a"), Hop("org/b"), Hop("org/c", "fallback")


class FakeCaller:
    """What `with_fallbacks` touches of a caller: the response's headers."""

    def __init__(self) -> None:
        self.response_headers: dict[str, str] = {}


def run(
    hops: list[Hop],
    failures: dict[str, ProxyError],
    breaker: Breaker | None = None,
    deadline_in_s: float = 30.0,
) -> tuple[str | ProxyError, list[str], UpstreamCall, FakeCaller]:
    tried: list[str] = []
    caller = FakeCaller()
    call = UpstreamCall(request_id="r", model=hops[0].model)

    async def send(hop: Hop) -> str:
        tried.append(hop.name)
        assert call.fallback_ready == (hop != hops[-1])  # the last is tried with its retries
        if hop.name in failures:
            raise failures[hop.name]
        return f"answer from {hop.name}"

    async def scenario() -> str | ProxyError:
        call.deadline = asyncio.get_running_loop().time() + deadline_in_s
        try:
            return await with_fallbacks(hops, gate, call, caller, send)  # type: ignore[arg-type]
        except ProxyError as error:
            return error

    gate = breaker or Breaker(failures=100, cooldown_s=30)
    return asyncio.run(scenario()), tried, call, caller


@pytest.mark.parametrize(
    "error",
    [
        UpstreamRateLimitError("429"),
        UpstreamError("The upstream failed with status 503."),
        UpstreamError("Could not connect to the upstream."),
        UpstreamTimeoutError("The upstream timed out."),
    ],
    ids=["429", "5xx", "connect", "timeout"],
)
def test_a_model_s_failure_moves_the_request_on(error: ProxyError) -> None:
    answer, tried, call, caller = run([A, B], {A.name: error})
    assert answer == "answer from org/b" and tried == [A.name, B.name]
    assert call.model == B.model and call.requested_model == A.model
    assert caller.response_headers == {FALLBACK_HEADER: B.model}


@pytest.mark.parametrize(
    "error",
    [
        UpstreamAuthError("401"),
        UpstreamCreditsError("402"),
        UpstreamModelNotFoundError("404"),
        UpstreamRejectedError("422", status_code=422),
    ],
)
def test_a_failure_of_the_request_or_the_account_is_answered_at_once(error: ProxyError) -> None:
    answer, tried, _, caller = run([A, B], {A.name: error})
    assert answer is error and tried == [A.name]
    assert caller.response_headers == {}


def test_the_first_model_s_answer_is_not_marked() -> None:
    answer, tried, call, caller = run([A, B, C], {})
    assert answer == "answer from org/a" and tried == [A.name]
    assert call.requested_model is None and caller.response_headers == {}


def test_every_model_failing_raises_the_last_failure() -> None:
    last = UpstreamRateLimitError("the third")
    answer, tried, _, _ = run(
        [A, B, C], {A.name: UpstreamError("1"), B.name: UpstreamError("2"), C.name: last}
    )
    assert answer is last and tried == [A.name, B.name, C.name]


def test_no_fallback_is_started_with_less_than_a_second_left() -> None:
    first = UpstreamError("1")
    answer, tried, _, _ = run([A, B], {A.name: first}, deadline_in_s=0.5)
    assert answer is first and tried == [A.name]


def test_an_open_model_is_skipped_and_the_second_upstream_counted_apart() -> None:
    gate = Breaker(failures=1, cooldown_s=30)
    run([A, C], {A.name: UpstreamError("down")}, gate)
    answer, tried, _, caller = run([A, C], {}, gate)
    assert answer == "answer from fallback>org/c" and tried == [C.name]
    assert caller.response_headers == {FALLBACK_HEADER: C.model}
    # The same model on the other upstream is another hop: its breaker is closed.
    answer, tried, _, _ = run([A, Hop("org/a", "fallback")], {}, gate)
    assert tried == ["fallback>org/a"]


def test_one_hop_never_asks_the_breaker() -> None:
    class Refusing(Breaker):
        async def read(self, models: object) -> object:  # type: ignore[override]
            raise AssertionError("asked")

    answer, _, _, _ = run([A], {}, Refusing(failures=1, cooldown_s=1))
    assert answer == "answer from org/a"
