"""Client keys: names, hashed entries, expiry, and refusals that say what to do."""

from __future__ import annotations

import hashlib

import pytest

from lib.access import AccessControl
from lib.access.keys import KEY_PREFIX, KeyRing, new_key
from lib.errors import AuthenticationError, NotConfiguredError
from lib.keys import main as keys_command
from lib.settings import Settings

KEY = "pg_test_canary_key_auth1"
KEY_SHA256 = hashlib.sha256(KEY.encode()).hexdigest()


def keys(*entries: str, anonymous: bool = False, keys_toml: str | None = None, now: float = 0):
    settings = Settings(
        _env_file=None,
        proxy_api_keys=",".join(entries),
        allow_anonymous=anonymous,
        keys_toml=keys_toml,
    )
    return AccessControl(settings, clock=lambda: now).keys


def check(ring: KeyRing, header: str | None) -> str:
    return ring.identify(header).name


def test_configured_key_is_accepted() -> None:
    keys(KEY).identify(f"Bearer {KEY}")
    keys("other-key-000", KEY).identify(f"bearer  {KEY} ")


def test_sha256_entry_accepts_the_key_it_hashes() -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    keys(f"sha256:{digest}").identify(f"Bearer {KEY}")
    with pytest.raises(AuthenticationError):
        keys(f"sha256:{digest}").identify(f"Bearer sha256:{digest}")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {KEY}", KEY])
def test_missing_key_is_refused_with_how_to_send_it(header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        keys(KEY).identify(header)
    assert caught.value.code == "missing_api_key"
    assert "Authorization: Bearer <key>" in caught.value.message


def test_wrong_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(AuthenticationError) as caught:
        keys(KEY).identify("Bearer pg_test_canary_wrong_key")
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert "pg_test_canary_wrong_key" not in caught.value.message


def test_hugging_face_token_sent_as_key_gets_a_hint() -> None:
    with pytest.raises(AuthenticationError) as caught:
        keys(KEY).identify("Bearer hf_test_canary_users_own_token")
    assert "Hugging Face token" in caught.value.message
    assert "hf_test_canary_users_own_token" not in caught.value.message


def test_no_keys_and_no_anonymous_refuses_with_configuration_advice() -> None:
    with pytest.raises(NotConfiguredError) as caught:
        keys().identify(f"Bearer {KEY}")
    assert "PROXY_API_KEYS" in caught.value.message and "ALLOW_ANONYMOUS" in caught.value.message


def test_anonymous_mode_without_keys_serves_callers_with_no_key_or_any_placeholder() -> None:
    keys(anonymous=True).identify(None)
    keys(anonymous=True).identify("Bearer sk-placeholder-the-sdk-insists-on")


def test_anonymous_mode_still_checks_a_key_that_is_sent() -> None:
    anonymous = keys(KEY, anonymous=True)
    anonymous.identify(None)
    anonymous.identify(f"Bearer {KEY}")
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        anonymous.identify("Bearer whatever-else")


def test_anonymous_mode_refuses_a_hugging_face_token() -> None:
    for configured in ((), (KEY,)):
        with pytest.raises(AuthenticationError, match="Hugging Face token"):
            keys(*configured, anonymous=True).identify("Bearer hf_testcanaryAnonymous123456")


@pytest.mark.parametrize("position", [0, 1, 2])
def test_every_configured_key_is_accepted_wherever_it_is_listed(position: int) -> None:
    entries = ["pg_test_canary_key_other_a", "pg_test_canary_key_other_b"]
    entries.insert(position, KEY)
    keys(*entries).identify(f"Bearer {KEY}")
    for other in entries:
        keys(*entries).identify(f"Bearer {other}")


def test_proxy_api_keys_are_named_by_a_short_id_of_their_hash() -> None:
    named = keys(KEY).identify(f"Bearer {KEY}")
    assert named.name == "key-" + KEY_SHA256[:8]
    assert KEY not in named.name
    assert named.policy.rpm is None  # no [defaults]: no limits


def test_proxy_api_keys_get_the_defaults_and_named_keys_their_own_policy() -> None:
    other = "pg_test_canary_key_named"
    toml = f"""
[defaults]
rpm = 5
max_tokens = 100
[keys.mobile-app]
sha256 = "{hashlib.sha256(other.encode()).hexdigest()}"
rpm = 600
"""
    ring = keys(KEY, keys_toml=toml)
    plain = ring.identify(f"Bearer {KEY}")
    assert (plain.policy.rpm, plain.policy.max_tokens) == (5, 100)
    named = ring.identify(f"Bearer {other}")
    assert named.name == "mobile-app"
    assert (named.policy.rpm, named.policy.max_tokens) == (600, 100)


def test_a_key_in_both_places_is_the_named_key() -> None:
    toml = f'[keys.app]\nsha256 = "{KEY_SHA256}"\nrpm = 7\n'
    ring = keys(KEY, keys_toml=toml)
    assert ring.identify(f"Bearer {KEY}").name == "app"
    assert ring.identify(f"Bearer {KEY}").policy.rpm == 7


def test_expired_key_is_refused_with_key_expired() -> None:
    toml = f'[keys.old]\nsha256 = "{KEY_SHA256}"\nexpires = 2027-01-31\n'
    end_of_day = 1801440000  # 2027-02-01T00:00:00Z
    assert keys(keys_toml=toml, now=end_of_day - 1).identify(f"Bearer {KEY}").name == "old"
    with pytest.raises(AuthenticationError) as caught:
        keys(keys_toml=toml, now=end_of_day).identify(f"Bearer {KEY}")
    assert caught.value.status_code == 401 and caught.value.code == "key_expired"
    assert "2027-02-01 00:00 UTC" in caught.value.message


def test_anonymous_callers_share_the_anonymous_key_with_the_defaults() -> None:
    ring = keys(KEY, anonymous=True, keys_toml="[defaults]\nrpm = 3\n")
    anonymous = ring.identify(None)
    assert (anonymous.name, anonymous.policy.rpm) == ("anonymous", 3)
    assert ring.identify(f"Bearer {KEY}").name.startswith("key-")


def test_new_keys_are_long_random_and_prefixed() -> None:
    made = {new_key() for _ in range(20)}
    assert len(made) == 20
    assert all(k.startswith(KEY_PREFIX) and len(k) == 46 and k[3:].isalnum() for k in made)


def test_key_command_prints_the_key_once_and_a_stanza_with_its_hash(capsys) -> None:
    assert keys_command(["new", "mobile-app"]) == 0
    out = capsys.readouterr().out
    key = next(word for word in out.split() if word.startswith(KEY_PREFIX))
    assert out.count(key) == 1
    assert f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"' in out
    assert "[keys.mobile-app]" in out
    # The stanza it prints is a valid policy that accepts the key.
    stanza = out[out.index("[keys.mobile-app]") :]
    assert keys(keys_toml=stanza).identify(f"Bearer {key}").name == "mobile-app"


@pytest.mark.parametrize(
    "argv", [[], ["new"], ["new", "bad name"], ["old", "x"], ["new", "anonymous"]]
)
def test_key_command_refuses_bad_arguments(argv: list[str], capsys) -> None:
    assert keys_command(argv) == 2
    assert "usage" in capsys.readouterr().err
