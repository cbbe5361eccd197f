"""Model fallbacks: a request the upstream fails is sent to the next model of its chain.

A request moves on only before any byte reached the caller (a stream once its first event is
in hand), on an upstream 429, 5xx, failed connection or timeout, within the request's one
deadline: the time left is shared, never reset. A model with a fallback after it is tried
once (no retries: the next model is the retry) and has `FALLBACK_TIMEOUT_S` to start
answering; the last model of the chain gets the usual retries (`UPSTREAM_MAX_ATTEMPTS`).
Any other failure (4xx other than 429) is the caller's answer at once. Models the breaker
(lib/access/breaker.py) holds open are skipped, unless every model of the chain is open. A
hop may name the second upstream (`UPSTREAM_FALLBACK_URL`): the route picks its client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from lib.errors import (
    UpstreamAuthError,
    UpstreamCreditsError,
    UpstreamError,
    UpstreamModelNotFoundError,
    UpstreamRejectedError,
)
from lib.upstream import UpstreamCall

if TYPE_CHECKING:
    from lib.access import Breaker, Caller, Hop

FALLBACK_HEADER = "x-promptgate-fallback"
# A fallback is not started with less time left than this: it could not answer in time.
MIN_FALLBACK_S = 1.0
# Upstream failures that are about the request or the server's account, not the model's
# health: another model would fail the same way (or the caller must fix the request).
_NOT_THE_MODELS_FAULT = (
    UpstreamAuthError,
    UpstreamCreditsError,
    UpstreamModelNotFoundError,
    UpstreamRejectedError,
)


def falls_back(error: UpstreamError) -> bool:
    """True for a failure another model may not have: 429, 5xx, connection, timeout."""
    return not isinstance(error, _NOT_THE_MODELS_FAULT)


async def with_fallbacks[T](
    hops: Sequence[Hop],
    breaker: Breaker,
    call: UpstreamCall,
    caller: Caller,
    send: Callable[[Hop], Awaitable[T]],
) -> T:
    """`send(hop)` for the first hop of `hops` (a model, and its upstream) that answers.

    `call.model` becomes the model that answered (the ledger counts it) and, when it is not
    the first hop, the response carries `x-promptgate-fallback: <model>`. With one hop there
    is nothing to fall back to, and the breaker is not asked.
    """
    if len(hops) == 1:
        return await send(hops[0])
    reading = await breaker.read([hop.name for hop in hops])
    tried = [hop for hop in hops if hop.name not in reading.open] or [hops[0]]
    loop = asyncio.get_running_loop()
    for index, hop in enumerate(tried):
        call.model = hop.model
        call.fallback_ready = index < len(tried) - 1
        try:
            answer = await send(hop)
        except UpstreamError as error:
            if not falls_back(error):
                raise
            await breaker.failed(hop.name)
            left = None if call.deadline is None else call.deadline - loop.time()
            if not call.fallback_ready or (left is not None and left < MIN_FALLBACK_S):
                raise
            continue
        if hop.name in reading.failing:
            await breaker.succeeded(hop.name)
        if hop != hops[0]:
            caller.response_headers[FALLBACK_HEADER] = hop.model
            call.requested_model = hops[0].model
        return answer
    raise AssertionError("unreachable: the last model's failure is raised")  # pragma: no cover
