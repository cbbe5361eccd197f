"""A token can only narrow its key; asking for more is a 400 that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from lib.access.token_scope import ParentKey, TokenAsk, grant_token
from lib.errors import TokenScopeError

NOW = 1_900_000_000.0
CHAT = "HuggingFaceTB/SmolLM3-3B"
OTHER = "Qwen/Qwen3-4B"
ALLOWED = [CHAT, OTHER]
PARENT = ParentKey(name="mobile-app", models=(CHAT,), rpm=60, tpm=40000, daily_tokens=1_000_000)


def _grant(ask: TokenAsk, parent: ParentKey = PARENT, max_ttl_s: int = 3600) -> Any:
    return grant_token(ask, parent, allowed_models=ALLOWED, max_ttl_s=max_ttl_s, now=NOW)


def _refused(ask: TokenAsk, parent: ParentKey = PARENT, max_ttl_s: int = 3600) -> TokenScopeError:
    with pytest.raises(TokenScopeError) as caught:
        _grant(ask, parent, max_ttl_s)
    assert caught.value.status_code == 400
    assert caught.value.code == "token_scope_exceeded"
    return caught.value


def test_token_within_its_key_gets_what_it_asked_for() -> None:
    grant = _grant(TokenAsk(user="u1", ttl_s=600, models=(CHAT,), rpm=10, tpm=2000))
    assert (grant.user, grant.key, grant.models) == ("u1", "mobile-app", (CHAT,))
    assert grant.limits == {"rpm": 10, "tpm": 2000, "daily_tokens": None}
    assert (grant.issued_at, grant.expires_at) == (int(NOW), int(NOW) + 600)
    assert len(grant.jti) >= 20


def test_each_token_has_its_own_jti() -> None:
    assert _grant(TokenAsk(user="u")).jti != _grant(TokenAsk(user="u")).jti


def test_token_without_models_gets_its_keys_models() -> None:
    assert _grant(TokenAsk(user="u")).models == (CHAT,)


def test_token_of_a_key_without_models_is_bounded_by_allowed_models() -> None:
    parent = ParentKey(name="open")
    assert _grant(TokenAsk(user="u"), parent).models == tuple(ALLOWED)
    error = _refused(TokenAsk(user="u", models=("org/elsewhere",)), parent)
    assert error.param == "models"


def test_minting_a_model_outside_the_keys_is_400_naming_models() -> None:
    error = _refused(TokenAsk(user="u", models=(CHAT, OTHER)))
    assert error.param == "models"
    assert OTHER in error.message and "mobile-app" in error.message


def test_a_provider_suffix_narrows_a_keys_model() -> None:
    assert _grant(TokenAsk(user="u", models=(f"{CHAT}:groq",))).models == (f"{CHAT}:groq",)


def test_a_wildcard_is_only_for_a_key_that_has_one() -> None:
    assert _refused(TokenAsk(user="u", models=("*",))).param == "models"
    wild = ParentKey(name="wild", models=("*",))
    assert _grant(TokenAsk(user="u", models=("*",)), wild).models == ("*",)


@pytest.mark.parametrize("field", ["rpm", "tpm", "daily_tokens"])
def test_minting_a_limit_above_the_keys_is_400_naming_the_field(field: str) -> None:
    above = getattr(PARENT, field) + 1
    error = _refused(TokenAsk(user="u", **{field: above}))
    assert error.param == field
    assert f"'{field}' asks for {above}" in error.message


@pytest.mark.parametrize("value", [0, -1, True, "10"])
def test_a_limit_must_be_a_positive_integer(value: Any) -> None:
    assert _refused(TokenAsk(user="u", rpm=value)).param == "rpm"


def test_a_key_without_a_limit_lets_its_tokens_set_any() -> None:
    parent = ParentKey(name="k")
    assert _grant(TokenAsk(user="u", rpm=10**6), parent).rpm == 10**6


def test_minting_a_life_above_token_max_ttl_is_400_naming_ttl_s() -> None:
    error = _refused(TokenAsk(user="u", ttl_s=3601))
    assert error.param == "ttl_s" and "TOKEN_MAX_TTL_S (3600 s)" in error.message


def test_minting_a_life_past_the_keys_expiry_is_400_naming_ttl_s() -> None:
    parent = ParentKey(name="k", expires_at=NOW + 300)
    error = _refused(TokenAsk(user="u", ttl_s=600), parent)
    assert error.param == "ttl_s" and "past the expiry of key 'k'" in error.message
    assert _grant(TokenAsk(user="u", ttl_s=300), parent).expires_at == int(NOW) + 300


def test_without_ttl_a_token_lives_token_max_ttl_or_until_its_key_expires() -> None:
    assert _grant(TokenAsk(user="u"), max_ttl_s=900).expires_at == int(NOW) + 900
    parent = ParentKey(name="k", expires_at=NOW + 120)
    assert _grant(TokenAsk(user="u"), parent, max_ttl_s=900).expires_at == int(NOW) + 120


def test_an_expired_key_mints_nothing() -> None:
    _refused(TokenAsk(user="u"), ParentKey(name="k", expires_at=NOW - 1))


@pytest.mark.parametrize("user", ["", "x" * 129, "line\nbreak", "tab\there", "\x00"])
def test_user_must_be_1_to_128_printable_characters(user: str) -> None:
    assert _refused(TokenAsk(user=user)).param == "user"


def test_a_128_character_unicode_user_is_fine() -> None:
    assert _grant(TokenAsk(user="é" * 128)).user == "é" * 128
