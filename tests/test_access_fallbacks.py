"""Fallbacks as configured: `[fallbacks]` in the policy file or `FALLBACKS`, and the one line
that stops start-up when they are wrong."""

from __future__ import annotations

import pytest

from lib.access import Hop
from lib.access.policy import load_policies
from lib.app import create_app_or_exit
from lib.settings import Settings, SettingsError, load_settings

ALLOWED = "org/model-a,org/model-b,org/model-c"
POLICY = """
[fallbacks]
"org/model-a" = ["org/model-b", "org/model-c"]
"org/model-b" = ["org/model-c"]
"""


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, allowed_models=ALLOWED, **values)


def test_the_policy_files_table_gives_each_model_its_chain() -> None:
    fallbacks = load_policies(settings(keys_toml=POLICY)).fallbacks
    assert fallbacks == {
        "org/model-a": (Hop("org/model-b"), Hop("org/model-c")),
        "org/model-b": (Hop("org/model-c"),),
    }


def test_fallbacks_as_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_MODELS", ALLOWED)
    monkeypatch.setenv("FALLBACKS", '{"org/model-a": ["org/model-c"]}')
    fallbacks = load_policies(load_settings(_env_file=None)).fallbacks
    assert fallbacks == {"org/model-a": (Hop("org/model-c"),)}


def test_no_fallbacks_by_default() -> None:
    assert load_policies(settings()).fallbacks == {}
    assert load_policies(settings(keys_toml="[defaults]\nrpm = 5\n")).fallbacks == {}


def test_fallbacks_that_are_not_json_name_the_variable_not_the_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FALLBACKS", "{'org/model-a': pg_test_canary_key_fallbacks}")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert str(raised.value).startswith("invalid setting FALLBACKS: must be a JSON object")
    assert "pg_test_canary" not in str(raised.value)


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ('"org/model-a" = ["org/elsewhere"]', "model 'org/elsewhere' is not in ALLOWED_MODELS"),
        ('"org/elsewhere" = ["org/model-a"]', "model 'org/elsewhere' is not in ALLOWED_MODELS"),
        ('"org/model-a" = "org/model-b"', "must be a list of model ids"),
        ('"org/model-a" = []', "must be a list of model ids"),
        ('"org/model-a" = ["not a model"]', "'not a model' is not a Hub model id"),
        ('"org/model-a" = ["org/model-b", "org/Model-B"]', "a model appears twice"),
        ('"org/model-a" = ["org/model-a"]', "a model appears twice"),
    ],
)
def test_a_bad_fallbacks_entry_names_the_source_and_the_model(table: str, reason: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_policies(settings(keys_toml=f"[fallbacks]\n{table}\n"))
    message = str(raised.value)
    assert message.startswith("KEYS_TOML: [fallbacks] ") and reason in message


def test_more_than_four_fallbacks_per_model_are_refused() -> None:
    models = [f"org/m{i}" for i in range(5)]
    with pytest.raises(SettingsError, match="at most 4 fallbacks"):
        load_policies(
            Settings(_env_file=None, allowed_models="*", fallbacks={"org/model-a": models})
        )


def test_both_sources_at_once_are_refused() -> None:
    with pytest.raises(
        SettingsError, match=r"set FALLBACKS or KEYS_TOML's \[fallbacks\], not both"
    ):
        load_policies(settings(keys_toml=POLICY, fallbacks={"org/model-a": ["org/model-b"]}))


def test_a_bad_fallback_in_the_environment_stops_start_up_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOWED_MODELS", ALLOWED)
    monkeypatch.setenv("FALLBACKS", '{"org/model-a": ["org/unlisted"]}')
    with pytest.raises(SystemExit) as caught:
        create_app_or_exit()
    assert str(caught.value) == (
        "promptgate: FALLBACKS: [fallbacks] 'org/model-a': "
        "model 'org/unlisted' is not in ALLOWED_MODELS"
    )


SECOND = {"upstream_api": "openai", "upstream_fallback_url": "https://router.huggingface.co"}


def test_a_fallback_may_name_the_second_upstream() -> None:
    policy = """
[fallbacks]
"org/model-a" = [{ model = "org/model-a", upstream = "fallback" }, "org/model-b"]
"""
    fallbacks = load_policies(settings(keys_toml=policy, **SECOND)).fallbacks
    assert fallbacks == {"org/model-a": (Hop("org/model-a", "fallback"), Hop("org/model-b"))}
    # The same model through the other upstream is another hop, counted apart by the breaker.
    assert [hop.name for hop in fallbacks["org/model-a"]] == ["fallback>org/model-a", "org/model-b"]


def test_the_second_upstream_in_fallbacks_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_MODELS", ALLOWED)
    monkeypatch.setenv("UPSTREAM_API", "openai")
    monkeypatch.setenv("UPSTREAM_FALLBACK_URL", "http://127.0.0.1:11434")
    monkeypatch.setenv(
        "FALLBACKS", '{"org/model-a": [{"model": "org/model-b", "upstream": "fallback"}]}'
    )
    fallbacks = load_policies(load_settings(_env_file=None)).fallbacks
    assert fallbacks == {"org/model-a": (Hop("org/model-b", "fallback"),)}


@pytest.mark.parametrize(
    ("entry", "values", "reason"),
    [
        ('{ model = "org/model-b", upstream = "fallback" }', {}, "UPSTREAM_FALLBACK_URL is unset"),
        ('{ model = "org/model-b", upstream = "other" }', SECOND, 'upstream must be "fallback"'),
        ('{ model = "org/model-b" }', SECOND, "a fallback is a model id or"),
        ('{ model = "org/elsewhere", upstream = "fallback" }', SECOND, "not in ALLOWED_MODELS"),
    ],
)
def test_a_bad_second_upstream_entry_is_refused(
    entry: str, values: dict[str, str], reason: str
) -> None:
    policy = f'[fallbacks]\n"org/model-a" = [{entry}]\n'
    with pytest.raises(SettingsError) as raised:
        load_policies(settings(keys_toml=policy, **values))
    assert str(raised.value).startswith("KEYS_TOML: [fallbacks] 'org/model-a'")
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"upstream_fallback_url": "https://router.huggingface.co"},
            "invalid setting UPSTREAM_FALLBACK_URL: is only used with UPSTREAM_API=openai",
        ),
        (
            {"upstream_api": "openai", "upstream_fallback_token": "hf_test_canary_fb_never_shown"},
            "invalid setting UPSTREAM_FALLBACK_TOKEN: is only used with UPSTREAM_FALLBACK_URL set",
        ),
        (
            {"upstream_api": "openai", "upstream_fallback_url": "ftp://host?x=1"},
            "invalid setting UPSTREAM_FALLBACK_URL: must be an http(s) URL without query or "
            "fragment",
        ),
    ],
)
def test_the_second_upstream_s_settings_are_checked(values: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **values)
    assert str(raised.value) == message


def test_the_second_upstream_gets_its_own_url_and_token_only() -> None:
    main = load_settings(
        _env_file=None,
        hf_token="hf_test_canary_main_token",
        upstream_api="openai",
        upstream_fallback_url="http://127.0.0.1:11434/",
        upstream_fallback_token="hf_test_canary_second_token",
    )
    second = main.fallback_upstream_settings()
    assert second is not None and second.hf_base_url == "http://127.0.0.1:11434"
    assert second.hf_token is not None
    assert second.hf_token.get_secret_value() == "hf_test_canary_second_token"
    assert second.upstream_api == "openai" and second.upstream_fallback_url is None
    assert load_settings(_env_file=None).fallback_upstream_settings() is None
