"""Fuzzing: schemathesis drives every route of the app's own `/openapi.json`, over real sockets.

The proxy runs under uvicorn on loopback with the stand-in as its upstream, so inference
routes get real upstream answers. Each case, valid or not, must get an answer that:
  - is never a 5xx (the stand-in is healthy, so no 502/504 either; never a 500),
  - has a documented status, content type and body schema (schemathesis' checks, which
    also send schema-violating bodies and expect them refused with a 4xx),
  - if an error, has the error shape: `{"error": {"message", "type", "param", "code"}}`,
    or on `/models/*` the Hugging Face shape `{"error": "<str>", "error_type": "<str>"}`.

Cases: schemathesis' coverage cases (about 540 in all), then FUZZ_EXAMPLES generated ones
per route (default 15: about 650 cases, 35-45 s on 2 cores). The default run draws the
same cases every time, so `make test` does not fail at random; FUZZ_RANDOM=1 draws new ones.
For a long run:
    FUZZ_RANDOM=1 FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz.py -rA
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from lib.app import create_app
from lib.model_ids import is_valid_model_id
from lib.routes import TASK_ROUTE_PREFIX
from lib.schemas import MODEL_ID_SCHEMA_PATTERN
from lib.standin import StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN, CANARY_TOKEN_SECRET, make_settings
from tests.servers import serve_on_loopback

EXAMPLES_PER_ROUTE = int(os.environ.get("FUZZ_EXAMPLES", "15"))
DRAW_NEW_CASES = os.environ.get("FUZZ_RANDOM") == "1"
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
# Any model may be named, so generated ids reach the stand-in instead of stopping at a 403.
# Tokens are on, so that POST /v1/tokens is fuzzed past its 503.
APP_SETTINGS = {
    "allowed_models": "*",
    "request_timeout_s": 10.0,
    "token_secret": CANARY_TOKEN_SECRET,
}

_ACCEPTED = ["2XX", "400", "401", "403", "404", "429"]
# A schema-violating request is refused with a 4xx: 413 when it is too large; never a 5xx.
_REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
_CHECKS = {
    # A schema-valid request may still be refused with a 400 by a rule that a schema
    # cannot state (`dimensions` must equal the model's own count); never with a 422.
    "positive_data_acceptance": {"expected-statuses": _ACCEPTED},
    "negative_data_rejection": {"expected-statuses": _REFUSED},
}
_CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"mode": "all"},
        "checks": _CHECKS,
        "operations": [
            {
                # A task's `inputs` are the model's business; the upstream may refuse them (422).
                "include-path-regex": f"^{TASK_ROUTE_PREFIX}",
                "checks": {
                    **_CHECKS,
                    "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, "422"]},
                },
            }
        ],
    }
)
# The schema is the one the app serves; building it needs no server and no environment.
schema = schemathesis.openapi.from_dict(
    create_app(make_settings(**APP_SETTINGS)).openapi(), config=_CONFIG
)
tally: Counter[int] = Counter()


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    """The proxy under uvicorn on loopback, its upstream the stand-in (also on loopback)."""
    standin = StandinState(token=CANARY_TOKEN)
    with serve_on_loopback(create_standin_app(standin), log_level="critical") as standin_url:
        app = create_app(make_settings(hf_base_url=standin_url, **APP_SETTINGS))
        with serve_on_loopback(app, log_level="critical") as url:
            yield url


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One keep-alive session for all cases."""
    with requests.Session() as http:
        yield http


def assert_error_shape(path: str, body: object) -> None:
    """An error body in the shape the route's clients parse."""
    assert isinstance(body, dict), body
    if path.startswith(TASK_ROUTE_PREFIX):
        assert set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str) and isinstance(body["error_type"], str), body
        return
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_ROUTE,
    deadline=None,
    database=None,
    derandomize=not DRAW_NEW_CASES,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_schema(
    case: schemathesis.Case, proxy_url: str, session: requests.Session
) -> None:
    response = case.call(base_url=proxy_url, session=session, headers=AUTH)
    tally[response.status_code] += 1
    assert response.status_code < 500, response.text
    case.validate_response(
        response,
        headers=AUTH,
        transport_kwargs={"base_url": proxy_url, "session": session, "headers": AUTH},
    )
    if response.status_code >= 400:
        assert response.headers.get("content-type") == ["application/json"]
        assert_error_shape(response.request.path_url, response.json())


# What the fuzzer found, pinned so that it stays fixed whatever the next run generates.
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({**HELLO, "stop": "Observation:"}, 200),  # a lone stop string was held to 4 characters
        ({**HELLO, "stop": ["a", "b", "c", "d", "e"]}, 422),  # the list is what holds 4
        ({**HELLO, "max_tokens": 16.0}, 200),  # a whole number, as JSON Schema reads it
        ({**HELLO, "stream": 0}, 422),  # was coerced to false
        ({**HELLO, "seed": False}, 422),  # was coerced to 0
        ({**HELLO, "model": "org/a--b"}, 422),  # now excluded by the documented pattern too
    ],
)
def test_what_the_fuzzer_found_stays_fixed(
    proxy_url: str, session: requests.Session, body: dict, status: int
) -> None:
    response = session.post(f"{proxy_url}/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "model", ["org/name", "name", "org/name:groq", "a--b", "org/a..b", "org/x.git", "-x", "a/b/c"]
)
def test_the_documented_model_pattern_is_the_check_the_routes_make(model: str) -> None:
    documented = re.compile(MODEL_ID_SCHEMA_PATTERN)
    assert bool(documented.fullmatch(model)) == is_valid_model_id(model)


def test_the_fuzzer_ran_enough_cases() -> None:
    """Runs after the fuzzing above: a few hundred cases, and some of them succeeded."""
    if not tally:
        pytest.skip("the fuzz cases were deselected, so there is nothing to count")
    print(f"fuzz cases by status: {dict(sorted(tally.items()))}")
    assert sum(tally.values()) >= 8 * min(EXAMPLES_PER_ROUTE, 20)
    assert tally[200] > 0 and any(400 <= status < 500 for status in tally)
