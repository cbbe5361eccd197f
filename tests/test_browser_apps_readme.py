"""The README's "Browser apps" snippets, run as written: what they mint, the proxy accepts."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN_SECRET, chat_completion, make_settings
from tests.secret_audit import audited

ROOT = Path(__file__).resolve().parents[1]
SECRET = CANARY_TOKEN_SECRET
CHAT = "/v1/chat/completions"


def _snippet(language: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Browser apps\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one {language} block in 'Browser apps'"
    return blocks[0]


KEY_SHA256 = hashlib.sha256(CANARY_KEY.encode()).hexdigest()


def _proxy(upstream: respx.Router, key_sha256: str = KEY_SHA256) -> TestClient:
    keys = f'[keys.mobile-app]\nsha256 = "{key_sha256}"\n'
    upstream.post(CHAT).respond(200, json=chat_completion())
    settings = make_settings(token_secret=SECRET, keys_toml=keys)
    app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
    return TestClient(audited(app), raise_server_exceptions=False)


def _accepted(upstream: respx.Router, token: str) -> None:
    """The proxy accepts `token`, and refuses it once the key has been rotated."""
    rotated = hashlib.sha256(b"pg_test_canary_key_rotated").hexdigest()
    with _proxy(upstream, rotated) as client:
        response = client.post(
            CHAT,
            json={"messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 401 and "rotated" in response.text
    with _proxy(upstream) as client:
        response = client.post(
            CHAT,
            json={"messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit-requests"] == "10"  # the token's rpm


def test_readme_python_snippet_mints_a_token_the_proxy_accepts(
    upstream: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_SECRET", SECRET)
    monkeypatch.setenv("KEY_SHA256", KEY_SHA256.upper())  # either case works
    namespace: dict[str, object] = {}
    exec(compile(_snippet("python"), "README.md", "exec"), namespace)
    _accepted(upstream, str(namespace["token"]))


def test_readme_javascript_snippet_mints_a_token_the_proxy_accepts(
    upstream: respx.Router, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing: the README's JavaScript snippet is not tested")
        pytest.skip("node is missing: the README's JavaScript snippet is not tested")
    script = tmp_path / "mint.mjs"
    script.write_text(_snippet("js") + "\nconsole.log(token);\n")
    env = {"PATH": os.environ.get("PATH", ""), "TOKEN_SECRET": SECRET, "KEY_SHA256": KEY_SHA256}
    done = subprocess.run(
        [node, str(script)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    _accepted(upstream, done.stdout.strip())
