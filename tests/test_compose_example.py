"""examples/compose-local-model/compose.yaml: valid Compose, and free of the usual Docker pitfalls.

There is no Docker engine here: the file is validated against the Compose specification's JSON
schema (vendored in check-jsonschema as `vendor.compose-spec`), and each choice the example's
README explains is asserted on the parsed file. The `openai` mode it configures is exercised
against the stand-in in tests/test_openai_upstream.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib.app import create_app
from lib.model_ids import is_model_allowed
from lib.settings import Settings
from lib.standin import StandinState, create_standin_app
from tests.servers import serve_on_loopback

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "compose-local-model"
COMPOSE = EXAMPLE / "compose.yaml"
BIN = Path(sys.executable).parent
PROXY, MODEL_SERVER, PULL = "promptgate", "ollama", "ollama-pull"
OLLAMA_DATA_DIR = "/root/.ollama"  # where the ollama/ollama image keeps its models


def _compose() -> dict[str, Any]:
    from ruamel.yaml import YAML  # brought by check-jsonschema; the runtime needs none

    return YAML(typ="safe").load(COMPOSE.read_text())


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = BIN / "check-jsonschema"
    if not tool.exists():
        pytest.fail(f"check-jsonschema is not installed in {BIN}; run `make test`")
    return subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        # The schema ships inside check-jsonschema: nothing is fetched.
        env={**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9"},
    )


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def _volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount, from the short `source:target[:mode]` or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts.append((source, target))
    return mounts


# --- the specification ---------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  app:\n    image: x\n    portz: ['80:80']\n")
    result = _check_jsonschema(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Schema validation errors" in result.stdout


# --- the pitfalls the example's README explains -------------------------------------------


def test_every_service_is_on_the_one_user_defined_network() -> None:
    compose = _compose()
    assert set(compose["networks"]) == {"llm-net"}
    for name, service in compose["services"].items():
        assert "network_mode" not in service, name  # host or none would bypass the network
        assert list(service["networks"]) == ["llm-net"], name


def test_promptgate_reaches_the_model_by_service_name_in_openai_mode() -> None:
    services = _compose()["services"]
    environment = _environment(services[PROXY])
    assert environment["UPSTREAM_API"] == "openai"
    assert environment["HF_BASE_URL"] == "http://ollama:11434"
    host = re.match(r"http://([^:/]+)", environment["HF_BASE_URL"])
    assert host and host.group(1) in services
    for service in services.values():  # inside a container, localhost is that container
        for value in _environment(service).values():
            assert "localhost" not in value and "127.0.0.1" not in value, value
    assert _environment(services[PULL])["OLLAMA_HOST"] == "http://ollama:11434"


def test_the_weights_live_in_a_named_volume_at_the_model_servers_data_dir() -> None:
    compose = _compose()
    mounts = _volume_mounts(compose["services"][MODEL_SERVER])
    assert mounts == [("ollama-models", OLLAMA_DATA_DIR)]
    # A name declared at the top level, so Compose keeps it across `down` (not a bind path).
    assert "ollama-models" in compose["volumes"]


def test_only_promptgate_publishes_a_port_and_only_on_loopback() -> None:
    services = _compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {PROXY}
    assert services[PROXY]["ports"] == ["127.0.0.1:7860:7860"]
    exposed = re.search(r"^EXPOSE (\d+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert exposed and exposed.group(1) == "7860"


def test_promptgate_is_built_from_the_repositorys_dockerfile() -> None:
    build = _compose()["services"][PROXY]["build"]
    context = (EXAMPLE / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_no_secret_is_written_in_the_file() -> None:
    services = _compose()["services"]
    environment = _environment(services[PROXY])
    assert "HF_TOKEN" not in environment  # Ollama needs none
    # Client keys come from the shell or .env, and Compose refuses to start without them.
    assert re.fullmatch(r"\$\{PROXY_API_KEYS:\?[^}]+\}", environment["PROXY_API_KEYS"])
    for service in services.values():
        assert "env_file" not in service or ".env" not in str(service["env_file"])


def test_the_pulled_models_are_the_ones_promptgate_serves_and_allows() -> None:
    services = _compose()["services"]
    environment = _environment(services[PROXY])
    values = {name.lower(): value for name, value in environment.items()}
    values["proxy_api_keys"] = "pg_test_canary_compose_key"
    settings = Settings(_env_file=None, **values)  # the container's settings start up
    assert settings.upstream_api == "openai"
    assert settings.hf_token is None
    script = " ".join(services[PULL]["command"])
    pulled = re.search(r"for model in ([^;]+);", script)
    assert pulled, script
    models = pulled.group(1).split()
    assert models == [settings.default_model, settings.embedding_model]
    assert all(is_model_allowed(m, settings.allowed_models) for m in models)
    # promptgate starts after the models are there, and the model server is pinned.
    assert services[PROXY]["depends_on"][PULL]["condition"] == "service_completed_successfully"
    image = services[MODEL_SERVER]["image"]
    assert re.fullmatch(r"ollama/ollama:\d+\.\d+\.\d+", image)
    assert services[PULL]["image"] == image


def test_promptgates_settings_from_the_file_work_against_an_openai_server() -> None:
    # The container's environment, with the stand-in (no token, like Ollama) as `ollama`.
    environment = _environment(_compose()["services"][PROXY])
    values = {name.lower(): value for name, value in environment.items()}
    values["proxy_api_keys"] = "pg_test_canary_compose_key"
    state = StandinState(token=None, api="openai")
    with serve_on_loopback(create_standin_app(state)) as ollama:
        values["hf_base_url"] = ollama
        app = create_app(Settings(_env_file=None, **values))
        with serve_on_loopback(app) as url:
            auth = {"Authorization": "Bearer pg_test_canary_compose_key"}
            chat = httpx.post(
                f"{url}/v1/chat/completions",
                headers=auth,
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                timeout=10,
            )
            assert chat.status_code == 200, chat.text
            assert chat.text.rstrip().endswith("data: [DONE]")
            embedded = httpx.post(f"{url}/v1/embeddings", headers=auth, json={"input": "x"})
            assert embedded.status_code == 200, embedded.text
    assert [r["path"] for r in state.received] == ["/v1/chat/completions", "/v1/embeddings"]
    assert [r["json"]["model"] for r in state.received] == ["smollm2:360m", "all-minilm"]
    assert all("authorization" not in r["headers"] for r in state.received)
