"""Fallbacks as configured: `[fallbacks]` in the policy file or `FALLBACKS`, and the one line
that stops start-up when they are wrong."""

from __future__ import annotations

import pytest

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
        "org/model-a": ("org/model-b", "org/model-c"),
        "org/model-b": ("org/model-c",),
    }


def test_fallbacks_as_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_MODELS", ALLOWED)
    monkeypatch.setenv("FALLBACKS", '{"org/model-a": ["org/model-c"]}')
    fallbacks = load_policies(load_settings(_env_file=None)).fallbacks
    assert fallbacks == {"org/model-a": ("org/model-c",)}


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
