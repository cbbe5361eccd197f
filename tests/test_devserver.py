"""`make dev` as a newcomer meets it: no token, no keys, and the README examples work as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lib.devserver import DEV_ADMIN_KEY, DEV_CLIENT_KEY
from tests.secret_audit import AUDIT
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
README_URL = "http://127.0.0.1:8000"


@dataclass
class DevServer:
    """A running `python -m lib.devserver`, and what it printed so far."""

    url: str
    process: subprocess.Popen
    stderr_path: Path


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    port = free_port()
    unset = ("HF_TOKEN", "PROXY_API_KEYS", "ALLOW_ANONYMOUS", "HF_BASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(PORT=str(port), PYTHONPATH=str(ROOT))
    workdir = tmp_path_factory.mktemp("dev")  # no .env here
    stderr_path = workdir / "stderr.txt"
    stdout_path = workdir / "stdout.txt"
    with stderr_path.open("w") as stderr, stdout_path.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "lib.devserver"],
            cwd=workdir,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                "dev server did not start"
            )
            time.sleep(0.1)
        yield DevServer(url, process, stderr_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        # Its log lines join the suite-wide search for leaked secrets.
        AUDIT.scan("make dev stdout", stdout_path.read_bytes())
        AUDIT.scan("make dev stderr", stderr_path.read_bytes())


def test_dev_server_without_token_serves_from_the_standin(dev_server: DevServer) -> None:
    answer = httpx.post(
        f"{dev_server.url}/api/generate",
        json={"prompt": "offline?"},
        headers={"Authorization": f"Bearer {DEV_CLIENT_KEY}"},
    )
    assert answer.status_code == 200
    assert answer.json()["text"] == "Hello from the stand-in upstream! You said: offline?"
    assert httpx.post(f"{dev_server.url}/api/generate", json={"prompt": "x"}).status_code == 401


def test_dev_server_banner_says_standin_and_key(dev_server: DevServer) -> None:
    stderr = dev_server.stderr_path.read_text()
    assert "stand-in upstream" in stderr and DEV_CLIENT_KEY in stderr
    assert DEV_ADMIN_KEY in stderr


def test_dev_server_usage_reads_with_the_dev_admin_key(dev_server: DevServer) -> None:
    client = {"Authorization": f"Bearer {DEV_CLIENT_KEY}"}
    sent = httpx.post(f"{dev_server.url}/api/generate", json={"prompt": "count me"}, headers=client)
    assert sent.status_code == 200
    admin = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
    report = httpx.get(f"{dev_server.url}/api/usage", headers=admin)
    assert report.status_code == 200
    assert report.json()["totals"]["requests"] >= 1
    assert httpx.get(f"{dev_server.url}/api/usage", headers=client).status_code == 403
    assert httpx.get(f"{dev_server.url}/usage").status_code == 200


def readme_blocks(language: str, heading: str) -> list[str]:
    """The code blocks in `language` of the README section under `heading`."""
    text = (ROOT / "README.md").read_text()
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def curl_commands(block: str) -> list[str]:
    """The curl commands of a shell block, each with its continuation lines."""
    commands, current = [], ""
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        current += line + "\n"
        if not line.endswith("\\") and current.count("'") % 2 == 0:
            commands.append(current)
            current = ""
    return commands


def test_readme_curl_examples_work_as_written(dev_server: DevServer) -> None:
    commands = curl_commands(readme_blocks("sh", "## Calling it")[0])
    assert len(commands) == 6
    for command in commands:
        command = command.replace(README_URL, dev_server.url)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, command
        assert '"error"' not in result.stdout, (command, result.stdout)
        if "stream" in command:
            assert result.stdout.rstrip().endswith("data: [DONE]"), command
        else:
            json.loads(result.stdout)


# What each README snippet prints against `make dev`, in the order they appear.
_PYTHON_OUTPUTS = [
    "Hello from the stand-in upstream! You said: Hello!",
    "Hello from the stand-in upstream! You said: Hello!",
    "2 vectors of 384",
    "2 vectors",
    "POSITIVE\n(384,)\n[0.324246, -0.006319]",
]


def test_readme_python_examples_work_as_written(dev_server: DevServer) -> None:
    snippets = readme_blocks("python", "## Calling it")
    assert len(snippets) == len(_PYTHON_OUTPUTS)
    for snippet, expected in zip(snippets, _PYTHON_OUTPUTS, strict=True):
        code = snippet.replace(README_URL, dev_server.url)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout, (snippet, result.stdout)
