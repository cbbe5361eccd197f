"""Calling a gated route's endpoint without FastAPI's dependency solving, where it is simple.

The hot routes (chat, embeddings, the Responses API) take a JSON body model, the request and
the caller, and answer a `Response`. For each request FastAPI would solve their dependency
tree (the bearer scheme, the caller) and validate the body through its own field wrappers:
about a tenth of the proxy's CPU per call under load (bench/profile.py). `GatedRoute` has
identified the caller and decoded the body already, so such an endpoint is called directly,
its body validated by the model's own `model_validate` and refused with the same
`RequestValidationError` FastAPI raises. Anything less simple keeps FastAPI's handler.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from lib.access import Caller

DirectCall = Callable[[Request, Caller, Any], Awaitable[Response]]


def direct_call(route: APIRoute, caller_dependency: Callable[..., Any]) -> DirectCall | None:
    """A call of `route`'s endpoint with (request, caller, decoded JSON body), or None when the
    endpoint needs more than that: path, query or header parameters, another dependency, a
    sync function, or an answer FastAPI must serialize."""
    endpoint = route.endpoint
    dependant = route.dependant
    if (
        not inspect.iscoroutinefunction(endpoint)
        or dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or len(dependant.body_params) != 1
        or any(d.call is not caller_dependency for d in dependant.dependencies)
    ):
        return None
    hints = typing.get_type_hints(endpoint)
    if hints.pop("return", None) is not Response:
        return None
    roles: dict[str, str] = {}
    model: type[BaseModel] | None = None
    for name, hint in hints.items():
        if hint is Request:
            roles[name] = "request"
        elif hint is Caller:
            roles[name] = "caller"
        elif isinstance(hint, type) and issubclass(hint, BaseModel) and model is None:
            roles[name], model = "body", hint
        else:
            return None
    if model is None or set(roles) != set(inspect.signature(endpoint).parameters):
        return None
    validate = model.model_validate

    async def call(request: Request, caller: Caller, data: Any) -> Response:
        try:
            body = validate(data)
        except ValidationError as exc:
            errors = [
                {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
            ]
            raise RequestValidationError(errors, body=data) from None
        given = {"request": request, "caller": caller, "body": body}
        return await endpoint(**{name: given[role] for name, role in roles.items()})

    return call
