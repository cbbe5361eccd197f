"""Stand-in answers that must fit what the caller asked for: a tool call, or JSON to a schema.

Clients' loops (the AI SDK's tools and `generateObject`, LangChain's `bind_tools` and
`with_structured_output`) only complete when the model calls a tool it was given, or
answers JSON that its schema accepts. The stand-in does both, with the smallest values
that fit. Never imported by the production app.
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def sample_for_schema(schema: Any) -> Any:
    """A small value that fits a JSON schema (the common keywords; enough for tool inputs)."""
    if not isinstance(schema, dict):
        return "stand-in"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_for_schema(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: sample_for_schema(sub) for name, sub in properties.items()}
    if kind == "array":
        return [sample_for_schema(schema.get("items"))] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "stand-in"


def json_answer(kind: Any, schema: Any) -> str | None:
    """JSON text for a `json_schema` or `json_object` output format; None for plain text."""
    if kind == "json_schema":
        return json.dumps(sample_for_schema(schema))
    if kind == "json_object":
        return '{"answer": "stand-in"}'
    return None


def chat_json_answer(body: dict[str, Any]) -> str | None:
    """JSON text when a chat request's `response_format` asks for JSON."""
    response_format = body.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    return json_answer(response_format.get("type"), schema)


def chat_tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """A call of the chat request's first function tool, unless a tool result is already in."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    answered = any(m.get("role") == "tool" for m in body.get("messages") or [])
    if not tools or answered or body.get("tool_choice") == "none":
        return None
    function = tools[0]["function"]
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": function.get("name", "tool"),
            "arguments": json.dumps(sample_for_schema(function.get("parameters"))),
        },
    }
