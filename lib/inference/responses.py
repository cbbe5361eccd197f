"""OpenAI's Responses API, relayed to the router's `/v1/responses` like chat completions.

promptgate is stateless: it stores no response, so it sends `store: false` upstream and
refuses what needs a stored one (`store: true`, `previous_response_id`, `conversation`,
`background`, and the routes that read a stored response back) with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lib.errors import ClientRequestError, NotStoredError, UpstreamError
from lib.inference.chat import EventsWrap
from lib.schemas import ResponsesRequest
from lib.upstream import (
    EventStreamResponse,
    Redactor,
    UpstreamCall,
    UpstreamClient,
    UpstreamReply,
    relay_response_events,
)

if TYPE_CHECKING:
    from lib.access import Caller

RESPONSES_PATH = "/v1/responses"
_NOTHING_KEPT = "promptgate is stateless and keeps no responses"
# Fields that only make sense against a stored response, and what to do instead.
_NEEDS_STORAGE = {
    "previous_response_id": "send the whole conversation in 'input' instead",
    "conversation": "send the whole conversation in 'input' instead",
    "background": "send the request without 'background' and keep the connection open",
}


@dataclass(frozen=True, slots=True)
class ResponseUsage:
    """Token counts of one response, as the router reported them."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


def build_responses_payload(body: ResponsesRequest, model: str) -> dict[str, Any]:
    """The upstream body: what the caller sent, with the resolved model and `store: false`.

    Raises `ClientRequestError` for what needs a stored response.
    """
    payload = body.model_dump(exclude_unset=True)
    if payload.get("store") is True:
        raise ClientRequestError(
            f"'store: true' is not supported: {_NOTHING_KEPT}. Omit 'store' or set it to false.",
            param="store",
            code="store_not_supported",
        )
    for field, instead in _NEEDS_STORAGE.items():
        if payload.get(field) not in (None, False):
            raise ClientRequestError(
                f"'{field}' is not supported: {_NOTHING_KEPT}; {instead}.",
                param=field,
                code="not_stored",
            )
    payload["model"] = model
    payload["store"] = False
    return payload


def refuse_stored_response(response_id: str) -> NotStoredError:
    """The error for any route that reads or changes a stored response."""
    shown = response_id[:100]
    return NotStoredError(
        f"No stored response '{shown}': {_NOTHING_KEPT}. Keep what you need from the answer "
        "to POST /v1/responses.",
        param="response_id",
    )


def response_usage(response: Any) -> ResponseUsage | None:
    """The usage in a response object (answer or terminal event), or None without one."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = [usage.get(name) for name in ("input_tokens", "output_tokens", "total_tokens")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return None
    return ResponseUsage(*counts)


async def forward_response(
    upstream: UpstreamClient, payload: dict[str, Any], call: UpstreamCall, caller: Caller
) -> UpstreamReply:
    """Create a response in one piece, check that it is one, and count its tokens (its
    `usage`, or an estimate from the prompt and the output's text).

    A `failed` response is an upstream failure, answered as one (never with a 200).
    """
    reply = await upstream.post_json(RESPONSES_PATH, payload, call)
    data = reply.data
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise UpstreamError("The upstream answered with something that is not a response.")
    if data.get("status") == "failed":
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        # The reply is redacted of the server's token already; this also removes other
        # token-shaped text, and cuts the reason to length.
        reason = Redactor(None).reason(str(message)) if message else "no reason given"
        raise UpstreamError(f"The upstream failed to create the response: {reason}")
    await caller.charge(data.get("usage"), payload=payload, answer_chars=_output_chars(data))
    return reply


def _output_chars(response: dict[str, Any]) -> int:
    """The characters of text in a response's output items (messages, reasoning, calls)."""
    chars = 0
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):
            chars += len(item["arguments"])
        for part in item.get("content") or ():
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str):
                chars += len(text)
    return chars


async def stream_response(
    upstream: UpstreamClient,
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
    *,
    wrap: EventsWrap | None = None,
) -> EventStreamResponse:
    """Open a streamed response; return the response that relays its events (through `wrap`,
    when given) and counts its tokens however it ends."""
    stream = await upstream.open_stream(RESPONSES_PATH, payload, call)
    events = relay_response_events(stream, caller, payload)
    return EventStreamResponse(wrap(events) if wrap else events, stream)
