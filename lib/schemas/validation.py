"""What a request validation error says: the field that failed and the rule it broke.

pydantic reports a value that fits no member of a union (`str | list[str]`) once per member,
each under a location that names the member (`input.str`, `input.list[str]`): the first of
those is rarely the rule the caller broke. This module reads the locations against the body
that was sent, so the answer names the field (`input`) and the rule that actually failed:
the one from the member whose JSON type the value has ("at most 2048 items", "item 3 should
be a valid string"), or, when the value has none of the members' types, the types allowed
("expected a string or a list of strings").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# How a union member's tag reads in a message; tags not listed are described by their shape.
_MEMBER_PHRASES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "none": "null",
    "list[str]": "a list of strings",
    "list[dict[str,any]]": "a list of objects",
    "dict[str,any]": "an object",
}
_SOURCES = ("body", "path", "query", "header", "cookie")


def explain_validation_error(
    errors: Sequence[Mapping[str, Any]], body: Any
) -> tuple[str | None, str]:
    """The dotted name of the field that failed (None for the whole body) and why, in words."""
    if not errors:
        return None, "invalid request"
    first = errors[0]
    path, tags = _read_location(first, body)
    if not tags:
        return _dotted(path), _reason(first)
    union_at = tags[0][0]
    members = [
        (error, error_path, error_tags)
        for error in errors
        for error_path, error_tags in [_read_location(error, body)]
        if error_tags and error_tags[0][0] == union_at and error_path[:union_at] == path[:union_at]
    ]
    for error, error_path, _ in members:
        # A member whose JSON type the value has, but that refused it: its rule is the one.
        if len(error_path) > union_at or not _is_type_mismatch(error):
            return _dotted(error_path), _reason(error)
    expected = list(dict.fromkeys(_phrase(error_tags[0][1]) for _, _, error_tags in members))
    return _dotted(path[:union_at]), "expected " + " or ".join(expected)


def _read_location(
    error: Mapping[str, Any], body: Any
) -> tuple[list[str | int], list[tuple[int, str]]]:
    """Split an error's location into the path in the body and the union members it names.

    Each member tag is returned with the path length at which it appeared. A step is a path
    step when the body has it (a key of an object, an index of a list); a missing field's
    own name is one too. Outside the body (path, query), every step is a path step.
    """
    loc = list(error.get("loc", ()))
    source = loc.pop(0) if loc and loc[0] in _SOURCES else None
    if source != "body":
        return loc, []
    path: list[str | int] = []
    tags: list[tuple[int, str]] = []
    value = body
    for position, step in enumerate(loc):
        if _has_step(value, step):
            value = value[step]
        elif isinstance(step, str) and not (
            error.get("type") == "missing" and position == len(loc) - 1
        ):
            tags.append((len(path), step))
            continue
        path.append(step)
    return path, tags


def _has_step(value: Any, step: Any) -> bool:
    if isinstance(value, dict):
        return step in value
    return (
        isinstance(value, list)
        and isinstance(step, int)
        and not isinstance(step, bool)
        and 0 <= step < len(value)
    )


def _is_type_mismatch(error: Mapping[str, Any]) -> bool:
    return str(error.get("type", "")).endswith("_type")


def _phrase(tag: str) -> str:
    tag = tag.replace("constrained-", "")  # a bounded `str` is still a string to the caller
    if tag in _MEMBER_PHRASES:
        return _MEMBER_PHRASES[tag]
    if tag.startswith("list["):
        return "a list"
    if tag.startswith("dict[") or tag[:1].isupper():
        return "an object"
    return tag


def _reason(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return message.replace(" after validation", "")


def _dotted(path: Sequence[str | int]) -> str | None:
    return ".".join(str(step) for step in path) or None
