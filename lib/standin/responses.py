"""The stand-in router's `POST /v1/responses`: OpenAI's Responses API, answered offline.

Shapes follow OpenAI's API reference and the platform notes: a `response` object whose
`output` holds a `message` item with one `output_text` part (or a `function_call` item),
and `usage{input_tokens, output_tokens, total_tokens}`; streamed, the named events from
`response.created` to `response.completed` (or `response.incomplete` when
`max_output_tokens` cut the text), each with its `sequence_number`.

Enough for a client's whole loop: given `tools` and no function call output in `input`,
it calls the first function tool with arguments that fit its schema; asked for JSON
(`text.format` of `json_schema`), it answers an object that fits the schema. Scripted
`Fault`s and `#standin:` tags work as on chat; `error_after` sends a Responses `error`
event. Never imported by the production app.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from lib.standin.state import Fault, StandinState, StreamEnd
from lib.standin.structured import json_answer, sample_for_schema


def responses_input_text(body: dict[str, Any]) -> str:
    """The text of the last user message in a Responses `input` (where `#standin:` tags go)."""
    given = body.get("input")
    if isinstance(given, str):
        return given
    for item in reversed(given if isinstance(given, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def answer_response(
    state: StandinState, model: str, body: dict[str, Any], fault: Fault
) -> Response:
    """The answer to a Responses request the stand-in accepted: JSON, or named events."""
    output, status = _output(body)
    response = _response(model, body, output, status)
    if body.get("stream"):
        events = _stream_events(state, response, fault)
        return StreamingResponse(events, media_type="text/event-stream")
    return JSONResponse(response)


def _output(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The output items, and `completed` or `incomplete` (cut by `max_output_tokens`)."""
    given = body.get("input")
    items = given if isinstance(given, list) else []
    answered = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
    tools = [
        t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
    ]
    if tools and not answered and body.get("tool_choice") != "none":
        tool = tools[0]
        call = {
            "type": "function_call",
            "id": f"fc_{uuid.uuid4().hex[:24]}",
            "call_id": f"call_{uuid.uuid4().hex[:24]}",
            "name": tool.get("name", "tool"),
            "arguments": json.dumps(sample_for_schema(tool.get("parameters"))),
            "status": "completed",
        }
        return [call], "completed"
    text_format = (body.get("text") or {}).get("format") or {}
    text = json_answer(text_format.get("type"), text_format.get("schema"))
    status = "completed"
    if text is None:
        said = " ".join(responses_input_text(body).split()[:20])
        words = f"Hello from the stand-in upstream! You said: {said}".split(" ")
        limit = body.get("max_output_tokens")
        status = "incomplete" if isinstance(limit, int) and 0 < limit < len(words) else "completed"
        text = " ".join(words[:limit] if status == "incomplete" else words)
    message = {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    return [message], status


def _response(
    model: str, body: dict[str, Any], output: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    prompt = len(responses_input_text(body).split()) + len(
        str(body.get("instructions") or "").split()
    )
    produced = sum(len(_item_text(item).split()) for item in output)
    return {
        "id": f"resp_{uuid.uuid4().hex[:24]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "metadata": {},
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": produced,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + produced,
        },
    }


def _item_text(item: dict[str, Any]) -> str:
    if item["type"] == "function_call":
        return item["arguments"]
    return item["content"][0]["text"]


def _pieces(text: str) -> list[str]:
    """The deltas a text streams as: one per word, each after the first with its space."""
    words = text.split(" ")
    return [words[0], *[" " + w for w in words[1:]]]


async def _stream_events(
    state: StandinState, response: dict[str, Any], fault: Fault
) -> AsyncIterator[bytes]:
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    delay = state.token_delay_s if fault.chunk_delay_s is None else fault.chunk_delay_s
    starting = {**response, "status": "in_progress", "output": [], "usage": None}
    completed = False
    try:
        yield event("response.created", response=starting)
        yield event("response.in_progress", response=starting)
        for index, item in enumerate(response["output"]):
            is_call = item["type"] == "function_call"
            opened = {**item, "status": "in_progress"}
            opened.update({"arguments": ""} if is_call else {"content": []})
            yield event("response.output_item.added", output_index=index, item=opened)
            where = {"item_id": item["id"], "output_index": index}
            if not is_call:
                part = {"type": "output_text", "text": "", "annotations": []}
                yield event("response.content_part.added", **where, content_index=0, part=part)
            for i, piece in enumerate(_pieces(_item_text(item))):
                if delay:
                    await asyncio.sleep(delay)
                if i == fault.cut_after:
                    return
                if i == fault.error_after:
                    yield event(
                        "error", code="server_error", message="CUDA out of memory", param=None
                    )
                    return
                if i == fault.reset_after:
                    raise ConnectionResetError("stand-in: connection reset mid-stream")
                if is_call:
                    yield event("response.function_call_arguments.delta", **where, delta=piece)
                else:
                    yield event(
                        "response.output_text.delta",
                        **where,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                    )
            if is_call:
                yield event(
                    "response.function_call_arguments.done", **where, arguments=item["arguments"]
                )
            else:
                text = item["content"][0]["text"]
                yield event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                )
                done_part = item["content"][0]
                yield event("response.content_part.done", **where, content_index=0, part=done_part)
            yield event("response.output_item.done", output_index=index, item=item)
        terminal = (
            "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        )
        yield event(terminal, response=response)
        completed = True
    finally:
        state.stream_ends.append(StreamEnd(time.monotonic(), completed))
