"""Redaction: no piece of the server's token survives in what the upstream says to a caller."""

from __future__ import annotations

import pytest

from lib.upstream.redaction import MAX_REASON_CHARS, PIECE, REDACTED, Redactor
from tests.conftest import CANARY_TOKEN

redactor = Redactor(CANARY_TOKEN)


def pieces(secret: str) -> list[str]:
    return [secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)]


def test_whole_token_is_replaced_wherever_it_stands() -> None:
    text = f"{CANARY_TOKEN} and auth failed for {CANARY_TOKEN}."
    assert redactor.redact(text) == f"{REDACTED} and auth failed for {REDACTED}."


@pytest.mark.parametrize("piece", pieces(CANARY_TOKEN))
def test_every_twelve_character_piece_is_replaced(piece: str) -> None:
    redacted = redactor.redact(f"before {piece} after")
    assert piece not in redacted
    assert REDACTED in redacted
    assert redacted.startswith("before ") and redacted.endswith(" after")


def test_longer_pieces_go_whole_not_leaving_their_ends() -> None:
    for start in range(0, 6):
        piece = CANARY_TOKEN[start:]
        redacted = redactor.redact(f"x{piece}y")
        assert redacted == f"x{REDACTED}y"


def test_token_past_the_cut_is_redacted_before_the_cut() -> None:
    text = "x" * (MAX_REASON_CHARS - 20) + CANARY_TOKEN + " tail"
    reason = redactor.reason(text)
    assert len(reason) <= MAX_REASON_CHARS
    for piece in pieces(CANARY_TOKEN):
        assert piece not in reason
    assert CANARY_TOKEN[:8] not in reason[-len(REDACTED) - 8 :]


def test_other_hugging_face_tokens_in_a_reason_are_redacted_too() -> None:
    assert redactor.redact("bad token hf_SomeoneElsesToken123 here") == (
        f"bad token {REDACTED} here"
    )


def test_bodies_are_redacted_as_bytes_and_stay_valid_json() -> None:
    body = b'{"echo":{"authorization":"Bearer ' + CANARY_TOKEN.encode() + b'"}}'
    assert redactor.redact_bytes(body) == b'{"echo":{"authorization":"Bearer [redacted]"}}'


def test_text_without_the_token_is_returned_unchanged() -> None:
    text = "hf_test is a prefix alone; canary_toke is one short of a piece"
    assert redactor.redact_bytes(text.encode()) == text.encode()


def test_no_token_configured_redacts_only_token_shapes() -> None:
    assert Redactor(None).redact_bytes(b"anything") == b"anything"
    assert Redactor(None).redact("hf_AbCdEfGhIjKl") == REDACTED
