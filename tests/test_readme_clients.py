"""The README's Responses API examples and its Clients snippets, run as written against `make dev`.

Each runs as a newcomer would run it: the shell examples with curl, the Python snippets with
the dev venv's Python, the AI SDK snippet with Node beside the pinned packages (tests/js).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ai_sdk import run_node_script
from tests.test_devserver import (  # noqa: F401 (dev_server: a fixture)
    README_URL,
    DevServer,
    curl_commands,
    dev_server,
    readme_blocks,
)

ROOT = Path(__file__).resolve().parent.parent
HELLO = "Hello from the stand-in upstream! You said: Hello!"


def run_python(snippet: str, dev: DevServer) -> str:
    code = snippet.replace(README_URL, dev.url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_responses_api_curl_examples(dev_server: DevServer) -> None:  # noqa: F811
    plain, streamed = curl_commands(readme_blocks("sh", "## The Responses API")[0])
    run = [
        subprocess.run(
            ["bash", "-c", command.replace(README_URL, dev_server.url)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        for command in (plain, streamed)
    ]
    assert '"object":"response"' in run[0].stdout.replace(" ", "")
    assert "Say hello in five words." in run[0].stdout
    events = [block for block in run[1].stdout.split("\n\n") if block.strip()]
    assert events[0].startswith("event: response.created\ndata: ")
    assert events[-1].startswith("event: response.completed\ndata: ")
    assert "[DONE]" not in run[1].stdout


def test_responses_api_python_example(dev_server: DevServer) -> None:  # noqa: F811
    (snippet,) = readme_blocks("python", "## The Responses API")
    assert run_python(snippet, dev_server) == f"{HELLO}\n{HELLO}\n"


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, f"{HELLO}\n{HELLO}\n2 vectors\n"),  # openai
        (1, f"{HELLO}\n(384,)\n"),  # huggingface_hub
        (2, f"{HELLO}\n{HELLO}\n2 vectors\n"),  # LangChain
    ],
)
def test_clients_python_snippets(dev_server: DevServer, index: int, expected: str) -> None:  # noqa: F811
    snippets = readme_blocks("python", "## Clients")
    assert len(snippets) == 3
    assert run_python(snippets[index], dev_server) == expected


def test_clients_ai_sdk_snippet(dev_server: DevServer) -> None:  # noqa: F811
    (snippet,) = readme_blocks("js", "## Clients")
    done = run_node_script(snippet.replace(README_URL, dev_server.url), "readme_snippet.mjs", {})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == f"{HELLO}\n{HELLO}\n2 vectors\n"
