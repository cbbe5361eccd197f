"""Client keys: constant-time checks, hashed entries, and refusals that say what to do."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from lib.auth import ClientKeys
from lib.errors import AuthenticationError, NotConfiguredError

KEY = "pg_test_canary_key_auth1"


def keys(*entries: str, anonymous: bool = False) -> ClientKeys:
    return ClientKeys([SecretStr(e) for e in entries], allow_anonymous=anonymous)


def test_configured_key_is_accepted() -> None:
    keys(KEY).check(f"Bearer {KEY}")
    keys("other-key-000", KEY).check(f"bearer  {KEY} ")


def test_sha256_entry_accepts_the_key_it_hashes() -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    keys(f"sha256:{digest}").check(f"Bearer {KEY}")
    with pytest.raises(AuthenticationError):
        keys(f"sha256:{digest}").check(f"Bearer sha256:{digest}")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {KEY}", KEY])
def test_missing_key_is_refused_with_how_to_send_it(header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        keys(KEY).check(header)
    assert caught.value.code == "missing_api_key"
    assert "Authorization: Bearer <key>" in caught.value.message


def test_wrong_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(AuthenticationError) as caught:
        keys(KEY).check("Bearer pg_test_canary_wrong_key")
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert "pg_test_canary_wrong_key" not in caught.value.message


def test_hugging_face_token_sent_as_key_gets_a_hint() -> None:
    with pytest.raises(AuthenticationError) as caught:
        keys(KEY).check("Bearer hf_test_canary_users_own_token")
    assert "Hugging Face token" in caught.value.message
    assert "hf_test_canary_users_own_token" not in caught.value.message


def test_no_keys_and_no_anonymous_refuses_with_configuration_advice() -> None:
    with pytest.raises(NotConfiguredError) as caught:
        keys().check(f"Bearer {KEY}")
    assert "PROXY_API_KEYS" in caught.value.message and "ALLOW_ANONYMOUS" in caught.value.message


def test_anonymous_mode_without_keys_serves_callers_with_no_key_or_any_placeholder() -> None:
    keys(anonymous=True).check(None)
    keys(anonymous=True).check("Bearer sk-placeholder-the-sdk-insists-on")


def test_anonymous_mode_still_checks_a_key_that_is_sent() -> None:
    anonymous = keys(KEY, anonymous=True)
    anonymous.check(None)
    anonymous.check(f"Bearer {KEY}")
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        anonymous.check("Bearer whatever-else")


def test_anonymous_mode_refuses_a_hugging_face_token() -> None:
    for configured in ((), (KEY,)):
        with pytest.raises(AuthenticationError, match="Hugging Face token"):
            keys(*configured, anonymous=True).check("Bearer hf_testcanaryAnonymous123456")


@pytest.mark.parametrize("position", [0, 1, 2])
def test_every_configured_key_is_accepted_wherever_it_is_listed(position: int) -> None:
    entries = ["pg_test_canary_key_other_a", "pg_test_canary_key_other_b"]
    entries.insert(position, KEY)
    keys(*entries).check(f"Bearer {KEY}")
    for other in entries:
        keys(*entries).check(f"Bearer {other}")
