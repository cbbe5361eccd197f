"""`make dev`: a newcomer with no token gets a working proxy backed by the stand-in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lib.devserver import DEV_CLIENT_KEY

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dev_server_without_token_serves_from_the_standin(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_TOKEN", "PROXY_API_KEYS", "ALLOW_ANONYMOUS")
    }
    env.update(PORT=str(port), PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "lib.devserver"],
        cwd=tmp_path,  # no .env here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                "dev server did not start"
            )
            time.sleep(0.1)
        answer = httpx.post(
            f"{base}/api/generate",
            json={"prompt": "offline?"},
            headers={"Authorization": f"Bearer {DEV_CLIENT_KEY}"},
        )
        assert answer.status_code == 200
        assert answer.json()["text"] == "Hello from the stand-in upstream! You said: offline?"
        assert httpx.post(f"{base}/api/generate", json={"prompt": "x"}).status_code == 401
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "stand-in upstream" in stderr and DEV_CLIENT_KEY in stderr
