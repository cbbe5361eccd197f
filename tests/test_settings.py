"""Settings: read from the environment, validated once, errors that name the variable only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.settings import DEFAULT_HF_BASE_URL, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_allow_only_the_default_models(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.hf_token is None
    assert settings.hf_base_url == DEFAULT_HF_BASE_URL
    assert settings.allowed_models == [settings.default_model, settings.embedding_model]
    assert settings.proxy_api_keys == [] and settings.allow_anonymous is False
    assert settings.max_body_bytes == 4_500_000  # Vercel's cap on request bodies


def test_comma_separated_lists_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ALLOWED_MODELS", " Qwen/Qwen2.5-7B-Instruct , HuggingFaceTB/SmolLM3-3B:hf-inference,"
    )
    monkeypatch.setenv("PROXY_API_KEYS", "first-key-123,second-key-456")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("HF_BASE_URL", "http://127.0.0.1:9999/")
    settings = load_settings()
    assert settings.allowed_models == [
        "Qwen/Qwen2.5-7B-Instruct",
        "HuggingFaceTB/SmolLM3-3B:hf-inference",
    ]
    assert [k.get_secret_value() for k in settings.proxy_api_keys] == [
        "first-key-123",
        "second-key-456",
    ]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.hf_base_url == "http://127.0.0.1:9999"


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HF_TOKEN=hf_test_canary_from_dotenv\nALLOW_ANONYMOUS=true\n")
    settings = load_settings()
    assert settings.hf_token is not None
    assert settings.hf_token.get_secret_value() == "hf_test_canary_from_dotenv"
    assert settings.allow_anonymous is True


def test_secret_values_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_canary_repr_check")
    monkeypatch.setenv("PROXY_API_KEYS", "pg_test_canary_repr_key")
    settings = load_settings()
    assert "hf_test_canary_repr_check" not in repr(settings)
    assert "pg_test_canary_repr_key" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("REQUEST_TIMEOUT_S", "soon", "valid number"),
        ("REQUEST_TIMEOUT_S", "-1", "greater than 0"),
        ("HF_BASE_URL", "ftp://secret-host.example", "http(s) URL"),
        ("DEFAULT_MODEL", "bad..model/x", "Hub model id"),
        ("ALLOWED_MODELS", "ok/model,../../etc", "Hub model id"),
        ("PROXY_API_KEYS", "short", "at least 8"),
        ("PROXY_API_KEYS", "sha256:nothex", "64 hex"),
        ("ALLOW_ANONYMOUS", "perhaps", "valid boolean"),
        ("LOG_LEVEL", "LOUD", "DEBUG"),
        ("MAX_BODY_BYTES", "999999999", "less than or equal"),
    ],
)
def test_bad_value_names_variable_but_not_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {name}:")
    assert reason in message
    assert value not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_entry_point_stops_with_one_line_naming_the_variable() -> None:
    env = {**os.environ, "PROXY_API_KEYS": "hf_test_canary_x", "HF_TOKEN": "hf_test_canary_y"}
    env["PROXY_API_KEYS"] = "tiny"
    result = subprocess.run(
        [sys.executable, "-c", "import api.index"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "promptgate: invalid setting PROXY_API_KEYS: each key must be at least 8 characters long"
    ]
    assert "tiny" not in result.stderr and "hf_test_canary_y" not in result.stderr


def test_env_example_names_every_setting_and_loads_as_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    example = (ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line[:40]}
    names = {n for n in names if not n.startswith("#")}
    assert names == {field.upper() for field in Settings.model_fields}
    (tmp_path / ".env").write_text(example)
    settings = load_settings()
    assert settings.hf_token is None and settings.allowed_models == [
        settings.default_model,
        settings.embedding_model,
    ]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (None, "only used with REDIS_URL"),
        ("redis://:pg_test_canary_pw@10.0.0.1:6379/3", "database 0 only"),
    ],
)
def test_redis_cluster_needs_a_store_url_with_database_zero(
    monkeypatch: pytest.MonkeyPatch, url: str | None, reason: str
) -> None:
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    if url is not None:
        monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid setting REDIS_CLUSTER:")
    assert reason in str(caught.value) and "pg_test_canary_pw" not in str(caught.value)


def test_redis_cluster_takes_a_kv_url_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    monkeypatch.setenv("KV_URL", "rediss://default:pg_test_canary_pw@cluster.example:6379")
    assert load_settings().redis_cluster is True
