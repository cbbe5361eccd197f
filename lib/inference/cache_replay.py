"""Cached answers and streams: a relayed stream gathered into the chat completion it amounts
to, and a kept completion replayed as a stream in the shape the relay sends.

One entry serves a request whether it streams or not: the completion (`choices`, `usage`,
`id`, `model`, `created`). A replayed chat stream sends, per choice, one chunk with the
whole message and one with its `finish_reason`, then the usage chunk when the caller asked
(`stream_options.include_usage`), then `[DONE]`; `/api/generate` sends its `{"text"}` event,
the closing event with the usage, then `[DONE]`.
"""

from __future__ import annotations

import json
from typing import Any

from lib.upstream import DONE_EVENT, format_event

# The only endings kept: a cut, filtered or failed answer is never replayed.
CACHED_FINISH_REASONS = frozenset({"stop", "length", "tool_calls"})


def is_cacheable_completion(data: Any) -> bool:
    """True for a chat completion whose every choice ended normally."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(choice, dict)
        and isinstance(choice.get("message"), dict)
        and choice.get("finish_reason") in CACHED_FINISH_REASONS
        for choice in choices
    )


def saved_tokens(data: dict[str, Any]) -> int:
    """The tokens a kept completion cost when it was made (0 when it carries no usage)."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0
    counts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    return sum(c for c in counts if isinstance(c, int) and not isinstance(c, bool))


class ChatStreamGatherer:
    """Gathers the chunks of a relayed chat stream into one completion, which it holds only
    when the stream ended with `[DONE]` and no error event."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._done = False
        self._broken = False
        self._buffer = b""

    def feed(self, piece: bytes) -> None:
        """Read the events of one piece the relay sent (pieces end on an event's end)."""
        self._buffer += piece
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        for block in blocks:
            data = _data_of(block)
            if data is None or self._broken:
                continue
            if data == b"[DONE]":
                self._done = True
                continue
            try:
                self._add(json.loads(data))
            except (ValueError, TypeError, AttributeError, KeyError):
                self._broken = True  # an error event, or a shape this does not know

    def completion(self, usage: dict[str, int] | None) -> dict[str, Any] | None:
        """The completion the stream amounts to, with `usage`; None unless it is complete."""
        if not self._done or self._broken or not self._choices:
            return None
        choices = []
        for index in sorted(self._choices):
            held = self._choices[index]
            message: dict[str, Any] = {"role": held.pop("role", "assistant"), "content": None}
            message.update(held.pop("text"))
            if held["tool_calls"]:
                message["tool_calls"] = [held["tool_calls"][i] for i in sorted(held["tool_calls"])]
            choices.append(
                {"index": index, "message": message, "finish_reason": held["finish_reason"]}
            )
        return {**self._head, "object": "chat.completion", "choices": choices, "usage": usage}

    def _add(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            raise ValueError("error event")
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in chunk and name not in self._head:
                self._head[name] = chunk[name]
        for choice in chunk.get("choices") or ():
            if choice.get("logprobs"):
                raise ValueError("logprobs are not gathered")
            held = self._choices.setdefault(
                int(choice.get("index", 0)),
                {"text": {}, "tool_calls": {}, "finish_reason": None},
            )
            held["finish_reason"] = choice.get("finish_reason") or held["finish_reason"]
            for name, value in (choice.get("delta") or {}).items():
                if name == "role" and isinstance(value, str):
                    held["role"] = value
                elif name == "tool_calls" and isinstance(value, list):
                    _add_tool_calls(held["tool_calls"], value)
                elif isinstance(value, str):
                    held["text"][name] = held["text"].get(name, "") + value


def _add_tool_calls(held: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    for delta in deltas:
        call = held.setdefault(
            int(delta.get("index", 0)), {"id": None, "type": "function", "function": {}}
        )
        for name in ("id", "type"):
            if delta.get(name):
                call[name] = delta[name]
        for name, value in (delta.get("function") or {}).items():
            if isinstance(value, str):
                call["function"][name] = call["function"].get(name, "") + value


class GenerateStreamGatherer:
    """Gathers a relayed `/api/generate` stream's `{"text"}` events into one completion."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._closing: dict[str, Any] | None = None
        self._done = self._broken = False
        self._buffer = b""

    def feed(self, piece: bytes) -> None:
        """Read the events of one piece the relay sent."""
        self._buffer += piece
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        for block in blocks:
            data = _data_of(block)
            if data == b"[DONE]":
                self._done = True
            elif data is not None:
                try:
                    event = json.loads(data)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or "error" in event:
                    self._broken = True
                elif "finish_reason" in event:
                    self._closing = event
                elif isinstance(event.get("text"), str):
                    self._text.append(event["text"])

    def completion(self) -> dict[str, Any] | None:
        """The completion the stream amounts to; None unless it is complete."""
        closing = self._closing
        if not self._done or self._broken or closing is None:
            return None
        message = {"role": "assistant", "content": "".join(self._text)}
        return {
            "object": "chat.completion",
            "model": closing.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": closing["finish_reason"]}
            ],
            "usage": closing.get("usage"),
        }


def replay_chat_stream(completion: dict[str, Any], *, show_usage: bool) -> bytes:
    """A kept completion as the chat stream's events, `[DONE]` last."""
    head = {
        name: completion[name]
        for name in ("id", "created", "model", "system_fingerprint")
        if name in completion
    }
    head["object"] = "chat.completion.chunk"
    events = []
    for choice in completion["choices"]:
        index = choice.get("index", 0)
        delta = {k: v for k, v in choice["message"].items() if k != "tool_calls"}
        if calls := choice["message"].get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        first: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": None}
        if choice.get("logprobs"):
            first["logprobs"] = choice["logprobs"]
        last = {"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}
        events += [{**head, "choices": [first]}, {**head, "choices": [last]}]
    if show_usage and isinstance(completion.get("usage"), dict):
        events.append({**head, "choices": [], "usage": completion["usage"]})
    return b"".join(format_event(event) for event in events) + DONE_EVENT


def replay_generate_stream(completion: dict[str, Any], model: str) -> bytes:
    """A kept completion as `/api/generate`'s stream: the text, the closing event, `[DONE]`."""
    choice = completion["choices"][0]
    text = choice["message"].get("content")
    events = [{"text": text}] if isinstance(text, str) and text else []
    events.append(
        {
            "model": model,
            "text": "",
            "finish_reason": choice["finish_reason"],
            "usage": completion.get("usage"),
        }
    )
    return b"".join(format_event(event) for event in events) + DONE_EVENT


def _data_of(block: bytes) -> bytes | None:
    lines = [
        line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines).strip() if lines else None
