"""Hugging Face task operations: the router paths of a model's task and pipelines on the
hf-inference provider, and the task body forwarded as sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lib.errors import ClientRequestError
from lib.upstream import UpstreamCall, UpstreamClient, UpstreamReply

if TYPE_CHECKING:
    from lib.access import Caller


def task_path(model: str) -> str:
    """The router path of a model's default task on the hf-inference provider."""
    return f"/hf-inference/models/{model}"


def pipeline_path(model: str, task: str) -> str:
    """The router path of one of a model's pipelines on the hf-inference provider."""
    return f"/hf-inference/models/{model}/pipeline/{task}"


def build_task_payload(body: Any) -> dict[str, Any]:
    """The body of a task route, forwarded as sent; streaming is not relayed on these routes."""
    if getattr(body, "stream", False):
        raise ClientRequestError(
            "Streaming is not supported on task routes; use /v1/chat/completions with stream.",
            param="stream",
        )
    return body.model_dump(exclude_unset=True)


# The fields of a task answer that hold generated text (text generation, summarization,
# translation), estimated at four characters a token when charged.
_GENERATED_TEXT_FIELDS = ("generated_text", "summary_text", "translation_text")


def cap_task_generation(payload: dict[str, Any], caller: Caller, *, generates: bool) -> None:
    """Hold a task body's `parameters` to the caller's cap: each length field present
    (`max_new_tokens`, ...) checked, and `max_new_tokens` added when `generates` and none is."""
    parameters = payload.get("parameters")
    checked = dict(parameters) if isinstance(parameters, dict) else {}
    caller.cap_completion_tokens(checked, send_as="max_new_tokens" if generates else None)
    if checked or parameters is not None:
        payload["parameters"] = checked


async def run_task(
    upstream: UpstreamClient,
    path: str,
    payload: dict[str, Any],
    call: UpstreamCall,
    caller: Caller,
) -> UpstreamReply:
    """Forward a task body and count its tokens: tasks report none, so an estimate from the
    input's text and any generated text in the answer."""
    reply = await upstream.post_json(path, payload, call)
    await caller.charge(None, payload=payload, answer_chars=generated_chars(reply.data))
    return reply


def generated_chars(answer: Any, *, nested: bool = False) -> int:
    """The characters of generated text in a task answer (a list of items, or one item; a
    batch of inputs has a list of items per input)."""
    items = answer if isinstance(answer, list) else [answer]
    chars = 0
    for item in items:
        if isinstance(item, list) and not nested:
            chars += generated_chars(item, nested=True)
        elif isinstance(item, dict):
            for name in _GENERATED_TEXT_FIELDS:
                text = item.get(name)
                if isinstance(text, str):
                    chars += len(text)
    return chars
