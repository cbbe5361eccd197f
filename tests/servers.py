"""Real servers on loopback for end-to-end tests: uvicorn in a thread, on a free port.

uvicorn parses HTTP with h11 here, as under Vercel's runtime (which installs uvicorn without
httptools); h11 is the stricter of the two, and drops a connection over a header value it
refuses. Tests that care about the parser also run with `http="httptools"`.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from tests.secret_audit import audited


@contextmanager
def serve_on_loopback(
    app: ASGIApp, log_level: str = "warning", http: str = "h11", *, audit: bool = True
) -> Iterator[str]:
    """Serve `app` under uvicorn on 127.0.0.1 and yield its base URL; stop it on exit.

    Its responses are searched for secrets (tests/secret_audit.py) unless `audit` is off: for
    a stand-in upstream scripted to echo the token, which is what the proxy must not do.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        audited(app) if audit else app,
        log_level=log_level,
        access_log=False,
        http=http,
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])),
        name=f"uvicorn-{port}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serve_proxy_and_standin(state: Any, **overrides: Any) -> Iterator[str]:
    """The stand-in upstream (holding `state`) and the proxy in front of it, both on loopback,
    under the test settings with `overrides`; yield the proxy's base URL."""
    from lib.app import create_app
    from lib.standin import create_standin_app
    from tests.conftest import make_settings

    with serve_on_loopback(create_standin_app(state), log_level="critical") as standin_url:
        app = create_app(make_settings(hf_base_url=standin_url, **overrides))
        with serve_on_loopback(app) as url:
            yield url


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], within_s: float = 60) -> None:
    """Return once the proxy process at `url` answers /api/health with 200."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the proxy at {url} did not start")
