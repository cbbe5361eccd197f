"""The policy file: what it accepts, and the one line that stops start-up when it is wrong."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from lib.access.policy import load_keys
from lib.app import create_app_or_exit
from lib.settings import Settings, SettingsError, load_settings

KEY = "pg_test_canary_key_policy"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
GOOD = f"""
[defaults]
rpm = 60
tpm = 40000
daily_tokens = 1000000
max_tokens = 1024

[keys.mobile-app]
sha256 = "{DIGEST}"
models = ["HuggingFaceTB/SmolLM3-3B"]
rpm = 600
daily_tokens = 5000000
expires = 2027-01-31
"""


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


def test_the_issue_example_loads_with_defaults_filled_in() -> None:
    (named,), defaults = load_keys(settings(keys_toml=GOOD))
    assert named.name == "mobile-app" and named.digest == bytes.fromhex(DIGEST)
    policy = named.policy
    assert (policy.rpm, policy.tpm, policy.daily_tokens, policy.max_tokens) == (
        600,
        40000,
        5_000_000,
        1024,
    )
    assert policy.models == ("HuggingFaceTB/SmolLM3-3B",)
    assert policy.expires == dt.datetime(2027, 2, 1, tzinfo=dt.UTC)  # through Jan 31, UTC
    assert defaults.rpm == 60 and defaults.expires is None


def test_keys_file_is_read_from_its_path(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(GOOD)
    (named,), _ = load_keys(settings(keys_file=str(path)))
    assert named.name == "mobile-app"


def test_datetime_expiry_with_offset_is_kept_as_that_instant() -> None:
    toml = f'[keys.a]\nsha256 = "{DIGEST}"\nexpires = 2027-01-31T12:00:00+02:00\n'
    (named,), _ = load_keys(settings(keys_toml=toml))
    assert named.policy.expires == dt.datetime(2027, 1, 31, 10, tzinfo=dt.UTC)


def test_the_cache_fields_fill_in_from_defaults_and_a_key_overrides_them() -> None:
    toml = (
        "[defaults]\ncache_ttl_s = 600\ncache_scope = 'deployment'\n"
        f'[keys.a]\nsha256 = "{DIGEST}"\ncache_ttl_s = 0\ncache_nondeterministic = true\n'
    )
    (named,), defaults = load_keys(settings(keys_toml=toml))
    assert defaults.cache_ttl_s == 600 and defaults.cache_scope == "deployment"
    assert named.policy.cache_ttl_s == 0 and named.policy.cache_nondeterministic is True
    assert named.policy.cache_scope == "deployment"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[keys.a\n", "KEYS_TOML: not valid TOML"),
        ("[limits]\nrpm = 1\n", "KEYS_TOML: unknown table [limits]"),
        ("[defaults]\nrpn = 1\n", "KEYS_TOML: [defaults]: unknown field 'rpn'"),
        ("[defaults]\nsha256 = 'x'\n", "KEYS_TOML: [defaults]: unknown field 'sha256'"),
        ('[keys.a]\nsha256 = "abc"\n', "KEYS_TOML: [keys.a]: sha256 must be 64 hex digits"),
        ("[keys.a]\nrpm = 5\n", "KEYS_TOML: [keys.a]: sha256 must be 64 hex digits"),
        (f'[keys.a]\nsha256 = "{DIGEST}"\nrpm = 0\n', "[keys.a]: rpm must be a whole number"),
        (f'[keys.a]\nsha256 = "{DIGEST}"\nrpm = "5"\n', "[keys.a]: rpm must be a whole number"),
        (f'[keys.a]\nsha256 = "{DIGEST}"\ncolor = 1\n', "[keys.a]: unknown field 'color'"),
        (
            f'[keys.a]\nsha256 = "{DIGEST}"\nmodels = ["Qwen/Qwen2.5-7B-Instruct"]\n',
            "[keys.a]: model 'Qwen/Qwen2.5-7B-Instruct' is not in ALLOWED_MODELS",
        ),
        (f'[keys.a]\nsha256 = "{DIGEST}"\nexpires = "soon"\n', "[keys.a]: expires must be"),
        (f'[keys.anonymous]\nsha256 = "{DIGEST}"\n', "[keys.anonymous]: the name is reserved"),
        ("[defaults]\ncache_ttl_s = -1\n", "[defaults]: cache_ttl_s must be whole seconds"),
        ("[users]\ncache_ttl_s = 1.5\n", "[users]: cache_ttl_s must be whole seconds"),
        ("[defaults]\ncache_scope = 'all'\n", 'cache_scope must be "key" or "deployment"'),
        ("[defaults]\ncache_nondeterministic = 1\n", "cache_nondeterministic must be true"),
        (
            f'[keys.a]\nsha256 = "{DIGEST}"\n[keys.b]\nsha256 = "{DIGEST.upper()}"\n',
            "two [keys] entries hold the same sha256",
        ),
    ],
)
def test_a_mistake_stops_start_up_naming_the_entry(toml: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_keys(settings(keys_toml=toml))
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_key_pasted_into_the_file_is_never_echoed() -> None:
    toml = f'[keys.a]\nsha256 = "{KEY}"\n'
    with pytest.raises(SettingsError) as caught:
        load_keys(settings(keys_toml=toml))
    assert KEY not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        load_keys(settings(keys_toml=f'[keys.a]\nsha256 = "{DIGEST}"\nrpm = {KEY}\n'))
    assert KEY not in str(caught.value)


def test_unreadable_file_and_both_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"KEYS_FILE .*missing.toml: cannot be read"):
        load_keys(settings(keys_file=str(tmp_path / "missing.toml")))
    with pytest.raises(SettingsError, match="set KEYS_FILE or KEYS_TOML, not both"):
        load_keys(settings(keys_file="k.toml", keys_toml=GOOD))


def test_start_up_exits_with_one_line_naming_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(f'[keys.mobile-app]\nsha256 = "{DIGEST}"\nburst = 3\n')
    monkeypatch.setenv("KEYS_FILE", str(path))
    with pytest.raises(SystemExit) as caught:
        create_app_or_exit()
    assert str(caught.value) == (
        f"promptgate: KEYS_FILE {path}: [keys.mobile-app]: unknown field 'burst'"
    )


def test_redis_url_must_be_redis_and_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, redis_url="http://user:pg_test_canary_pw@host:6379")
    assert str(caught.value) == "invalid setting REDIS_URL: must be a redis:// or rediss:// URL"
    assert settings(kv_url="rediss://default:x@host:6379").limits_store_url is not None
