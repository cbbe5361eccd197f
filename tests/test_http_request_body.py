"""Strict request bodies: only valid JSON reaches the upstream, and every refusal names why."""

from __future__ import annotations

import json

import pytest

from lib.errors import InvalidFieldError
from lib.http import MAX_JSON_DEPTH, decode_json_body


def refusal(body: bytes) -> InvalidFieldError:
    with pytest.raises(InvalidFieldError) as caught:
        decode_json_body(body)
    assert caught.value.status_code == 422
    return caught.value


def test_valid_json_comes_back_as_parsed_including_surrogate_pairs_and_big_floats() -> None:
    body = rb'{"messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00"}],"t":1e300,"n":0}'
    assert decode_json_body(body) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (rb'{"messages":[{"role":"user","content":"\ud800"}]}', "messages.0.content"),
        (
            rb'{"messages":[{"content":[{"type":"text","text":"a\udfffb"}]}]}',
            "messages.0.content.0.text",
        ),
        (rb'{"stream_options":{"x":"\uDBFF"}}', "stream_options.x"),
        (rb'{"input":["ok","\ud83d"]}', "input.1"),
        (rb'{"inputs":"\ude00 then a pair \ud83d\ude00"}', "inputs"),
    ],
)
def test_lone_surrogate_is_422_naming_the_field(body: bytes, param: str) -> None:
    error = refusal(body)
    assert error.param == param
    assert "surrogate" in error.message and param in error.message


def test_lone_surrogate_in_a_key_names_the_object_holding_it() -> None:
    error = refusal(rb'{"extra":{"\ud800":1}}')
    assert error.param == "extra"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"extra":NaN}', "extra"),
        (b'{"temperature":Infinity}', "temperature"),
        (b'{"parameters":{"top_p":-Infinity}}', "parameters.top_p"),
        (b'{"inputs":[1, 2, 1e400]}', "inputs.2"),
        (b'{"seed":-1e999}', "seed"),
    ],
)
def test_numbers_json_cannot_carry_are_422_naming_the_field(body: bytes, param: str) -> None:
    error = refusal(body)
    assert error.param == param
    assert "NaN, Infinity or overflow" in error.message


def test_nesting_past_the_limit_is_422_both_near_it_and_far_past_it() -> None:
    for depth in (MAX_JSON_DEPTH + 2, 1_500, 100_000):
        body = b'{"extra":' + b"[" * depth + b"]" * depth + b"}"
        error = refusal(body)
        assert f"deeper than {MAX_JSON_DEPTH}" in error.message
        assert error.code in ("invalid_json", "invalid_value")


def test_nesting_within_the_limit_is_accepted() -> None:
    depth = MAX_JSON_DEPTH - 2
    body = b'{"extra":' + b"[" * depth + b"]" * depth + b"}"
    assert decode_json_body(body)["extra"]


def test_many_flat_brackets_are_not_mistaken_for_depth() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "[{" * 500}] * 100}).encode()
    assert len(decode_json_body(body)["messages"]) == 100


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"seed":' + b"9" * 5_000 + b"}", "too many digits"),
        (b'{"content":"\xff\xfe"}', "not valid UTF-8"),
        (b"{bad", "not valid JSON"),
        (b'{"a":1} trailing', "not valid JSON"),
    ],
)
def test_undecodable_bodies_are_422_invalid_json(body: bytes, says: str) -> None:
    error = refusal(body)
    assert says in error.message
    assert error.code == "invalid_json"
