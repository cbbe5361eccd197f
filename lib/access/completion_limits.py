"""The completion cap: every length field a request sets, checked and held to a key's `max_tokens`.

Upstreams honour different names for one limit (chat: `max_tokens` and the newer
`max_completion_tokens`; the Responses API: `max_output_tokens`; Hugging Face's text
generation: `parameters.max_new_tokens`), and some take more than one. Each one present is
checked, never only the first found, so no second field can lift the cap. `n` choices share
the cap: a request may ask for at most `cap / n` tokens per choice.
"""

from __future__ import annotations

from typing import Any

from lib.errors import ClientRequestError, InvalidFieldError

LENGTH_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")


def check_completion_fields(
    payload: dict[str, Any], cap: int | None, *, send_as: str | None
) -> None:
    """Check `payload`'s length fields and `n`, and hold them to `cap` (None: no cap).

    A length field or `n` that is not a positive integer is a 422 naming it (`512.0` is the
    integer 512, as JSON reads it, and is sent as `512`); with a cap, a field above `cap / n`
    is a 400 `max_tokens_above_cap`, and a payload without any gets `send_as` set to it.
    A null field is dropped: it is the default, as if not sent.
    """
    for name in ("n", *LENGTH_FIELDS):
        if name in payload and payload[name] is None:
            del payload[name]  # null is the default: no limit set, one choice
    choices = _whole(payload, "n") if "n" in payload else 1
    asked = [name for name in LENGTH_FIELDS if name in payload]
    for name in asked:
        _whole(payload, name)
    if cap is None:
        return
    per_choice = cap // choices
    if per_choice < 1:
        raise ClientRequestError(
            f"'n' is {choices}: that many choices cannot share this key's cap of {cap} "
            f"tokens; ask for {cap} or fewer.",
            param="n",
            code="max_tokens_above_cap",
        )
    for name in asked:
        value = payload[name]
        if value > per_choice:
            shared = f" shared by {choices} choices (n)" if choices > 1 else ""
            raise ClientRequestError(
                f"'{name}' is {value}, above this key's cap of {cap} tokens{shared}; "
                f"ask for {per_choice} or fewer.",
                param=name,
                code="max_tokens_above_cap",
            )
    if not asked and send_as is not None:
        payload[send_as] = per_choice


def _whole(payload: dict[str, Any], name: str) -> int:
    """`payload[name]` as a positive integer (a whole float becomes one), or a 422."""
    value = payload[name]
    if isinstance(value, float) and value.is_integer():
        value = payload[name] = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        shown = repr(value)[:40]
        raise InvalidFieldError(
            f"'{name}' must be a positive integer; got {shown}.",
            param=name,
        )
    return value
