"""Strict decoding of JSON request bodies, so that only valid JSON ever reaches the upstream.

Python's `json` module accepts what JSON does not (`NaN`, `Infinity`, `1e400` read as
infinity, lone UTF-16 surrogates from `\\ud800` escapes) and fails in ways FastAPI turns into
a bare 400 (invalid UTF-8, deep nesting, 5,000-digit integers). Each case here is a 422 (415
for a compressed body) in the project's error shape, naming the field where there is one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

from lib.errors import InvalidFieldError, UnsupportedMediaTypeError

# Far deeper than any chat, tool schema or task body; shallow enough for every encoder.
MAX_JSON_DEPTH = 64
# A `\ud800`-`\udfff` escape in the raw body: the only way a surrogate gets into a str.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Where a number JSON cannot carry can come from: the constants Python reads, or an
# exponent of three digits or more (`1e400` reads as infinity).
_NON_FINITE_SOURCE = re.compile(rb"NaN|Infinity|[eE][+]?\d{3}")


def _read_constant(name: str) -> float:
    return math.nan  # found and refused, by path, in `_check_values`


# One decoder, built once: `json.loads` with a hook would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_read_constant)


def decode_json_body(body: bytes) -> Any:
    """The request's JSON, or an `InvalidFieldError` saying what makes it unacceptable."""
    try:
        data = _DECODER.decode(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise _invalid("The request body is not valid UTF-8.") from None
    except json.JSONDecodeError:
        raise _invalid("The request body is not valid JSON.") from None
    except RecursionError:
        raise _invalid(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError:
        # int() refuses more than 4,300 digits (CPython's guard against slow conversions).
        raise _invalid("The request body holds a number with too many digits.") from None
    surrogates = _SURROGATE_ESCAPE.search(body) is not None
    if (
        surrogates
        or _NON_FINITE_SOURCE.search(body) is not None
        or body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    ):
        _check_values(data, check_strings=surrogates)
    return data


def _check_values(data: Any, *, check_strings: bool) -> None:
    """Raise for the first non-finite number, lone surrogate or too-deep nesting, by path."""
    pending: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while pending:
        value, path = pending.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise _invalid(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid_at(path, "a number JSON cannot carry (NaN, Infinity or overflow)")
        if isinstance(value, str):
            if check_strings and _has_lone_surrogate(value):
                raise _invalid_at(path, "a lone UTF-16 surrogate, which is not valid Unicode")
        elif isinstance(value, dict):
            for key, item in value.items():
                if check_strings and _has_lone_surrogate(key):
                    raise _invalid_at(path, "a key holding a lone UTF-16 surrogate")
                pending.append((item, (*path, key)))
        elif isinstance(value, list):
            pending.extend((item, (*path, str(i))) for i, item in enumerate(value))


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _invalid(message: str) -> InvalidFieldError:
    return InvalidFieldError(message, code="invalid_json")


def _invalid_at(path: tuple[str, ...], reason: str) -> InvalidFieldError:
    param = ".".join(path) or None
    where = f"'{param[:100]}'" if param else "the body"
    return InvalidFieldError(f"Invalid value for {where}: {reason}.", param=param)


class DecodedRequest(Request):
    """A request whose body was read and decoded already: FastAPI gets the checked JSON."""

    def __init__(self, scope: Scope, receive: Receive, body: bytes, data: Any) -> None:
        super().__init__(scope, receive)
        self._raw_body = body
        self._data = data

    async def body(self) -> bytes:
        """The raw body, as read."""
        return self._raw_body

    async def json(self) -> Any:
        """The body's JSON, checked by `decode_json_body`."""
        return self._data


async def read_json_request(request: Request) -> Request:
    """The request with its JSON body read and checked; non-JSON bodies are left to FastAPI.

    A compressed body is refused (415): inflating it would bypass the body size limit.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding '{encoding[:40]}' is not accepted; send the JSON uncompressed."
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and not (content_type == "application/json" or content_type.endswith("+json")):
        return request
    body = await request.body()
    if not body:
        return request
    return DecodedRequest(request.scope, request.receive, body, decode_json_body(body))
