"""How a route calls the upstream: through the response cache when the caller's answers are
cached, then the model asked and, while the upstream fails, its fallbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal

from fastapi import Request

from lib import inference
from lib.access import Caller, Hop
from lib.routes.gate import services
from lib.upstream import UpstreamCall, UpstreamClient

Operation = Callable[..., Awaitable[Any]]


async def try_models[T](
    request: Request,
    caller: Caller,
    call: UpstreamCall,
    send: Callable[[UpstreamClient, Hop], Awaitable[T]],
) -> T:
    """`send(client, hop)` for the call's model, then for each of its fallbacks the caller may
    use while the upstream fails (`lib.inference.with_fallbacks`); `client` serves the hop."""
    shared = services(request)
    access = shared.access
    return await inference.with_fallbacks(
        access.model_chain(call.model, caller),
        access.breaker,
        call,
        caller,
        lambda hop: send(shared.upstream_for(hop), hop),
    )


async def forward_with_fallbacks[T](
    request: Request,
    caller: Caller,
    call: UpstreamCall,
    payload: dict[str, Any],
    operation: Callable[[UpstreamClient, dict[str, Any], UpstreamCall, Caller], Awaitable[T]],
) -> T:
    """`operation` (an inference function) with `payload`, its model replaced by each
    fallback's in turn (`try_models`)."""
    return await try_models(
        request,
        caller,
        call,
        lambda client, hop: operation(client, {**payload, "model": hop.model}, call, caller),
    )


async def answer_through_cache(
    request: Request,
    caller: Caller,
    call: UpstreamCall,
    payload: dict[str, Any],
    kind: Literal["chat", "generate", "response"],
) -> Any | None:
    """The answer to `payload` from the response cache, or from the upstream (with fallbacks)
    and kept; None when the caller's answers are not cached. `kind` names the route family,
    whose cache functions are imported only then."""
    cache = services(request).access.cache
    if caller.cache is None or cache is None:
        return None
    cached, forward, stream = _cached_operations(kind)
    return await cached(
        payload,
        call,
        caller,
        cache,
        request.headers.get("cache-control"),
        forward=lambda: forward_with_fallbacks(request, caller, call, payload, forward),
        stream=lambda wrap: forward_with_fallbacks(
            request, caller, call, payload, partial(stream, wrap=wrap)
        ),
    )


def _cached_operations(kind: str) -> tuple[Operation, Operation, Operation]:
    # Attribute reads of the inference face: they import the cache's modules (on first use).
    if kind == "chat":
        return inference.cached_chat, inference.forward_chat, inference.stream_chat
    if kind == "generate":
        return inference.cached_generate, inference.forward_chat, inference.stream_generated_text
    return inference.cached_response, inference.forward_response, inference.stream_response
