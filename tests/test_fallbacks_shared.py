"""Two proxy processes under uvicorn on one real Redis share the fallback breaker: failures
seen by one open the model for the other. Both run `api.index:app` from the environment, as
a deployment does, with `FALLBACKS` as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lib.standin import Fault, StandinState, create_standin_app
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.redis_server import RedisServer, run_redis_server
from tests.secret_audit import AUDIT
from tests.servers import free_port, serve_on_loopback, wait_until_healthy

REPO = Path(__file__).resolve().parent.parent
A, B = "org/model-a", "org/model-b"
HELLO = {"model": A, "messages": [{"role": "user", "content": "Hello?"}]}
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}


@dataclass
class Deployment:
    """Two proxy processes, their shared Redis, and the stand-in upstream behind them."""

    urls: list[str]
    redis: RedisServer
    standin: StandinState


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    state = StandinState(token=CANARY_TOKEN)
    workdir = tmp_path_factory.mktemp("proxies")
    with run_redis_server() as redis, serve_on_loopback(create_standin_app(state)) as standin:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "HF_TOKEN": CANARY_TOKEN,
            "HF_BASE_URL": standin,
            "PROXY_API_KEYS": CANARY_KEY,
            "ALLOWED_MODELS": f"{A},{B}",
            "FALLBACKS": json.dumps({A: [B]}),
            "FALLBACK_BREAKER_FAILURES": "2",
            "FALLBACK_BREAKER_COOLDOWN_S": "60",
            "REDIS_URL": redis.url,
            "LIMITS_STORE_TIMEOUT_S": "2",  # a shared 2-core machine: the bound is tested elsewhere
            "LOG_LEVEL": "WARNING",
        }
        processes, urls, outputs = [], [], []
        try:
            for _ in range(2):
                port = free_port()
                output = (workdir / f"proxy-{port}.log").open("wb")
                outputs.append(output)
                command = [sys.executable, "-m", "uvicorn", "api.index:app", "--host"]
                command += ["127.0.0.1", "--port", str(port), "--log-level", "warning"]
                process = subprocess.Popen(
                    command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
                )
                processes.append(process)
                urls.append(f"http://127.0.0.1:{port}")
            for url, process in zip(urls, processes, strict=True):
                wait_until_healthy(url, process)
            yield Deployment(urls, redis, state)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
            for output in outputs:
                output.close()
            for log in workdir.glob("proxy-*.log"):
                AUDIT.scan(f"log {log.name}", log.read_bytes())


def _models_sent(state: StandinState) -> list[str]:
    return [r["json"]["model"] for r in state.received if r["path"] == "/v1/chat/completions"]


def test_failures_on_one_instance_open_the_model_on_the_other(deployment: Deployment) -> None:
    first, second = deployment.urls
    state = deployment.standin
    state.model_faults[A] = Fault(status=503)
    for url in (first, second):  # one failure seen by each: two in a row, shared
        response = httpx.post(f"{url}/v1/chat/completions", json=HELLO, headers=AUTH, timeout=30)
        assert response.status_code == 200 and response.json()["model"] == B
    assert _models_sent(state) == [A, B, A, B]
    state.received.clear()
    for url in (second, first):
        response = httpx.post(f"{url}/v1/chat/completions", json=HELLO, headers=AUTH, timeout=30)
        assert response.json()["model"] == B and response.headers["x-promptgate-fallback"] == B
    assert _models_sent(state) == [B, B]  # neither instance tries A first any more
    assert "promptgate:{~fallbacks}:breaker" in deployment.redis.command("KEYS", "*")
