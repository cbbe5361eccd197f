"""Two proxy processes under uvicorn sharing one real Redis enforce one limit, exactly.

Also the official openai SDK against a limited key, and a stream whose caller hangs up.
Both processes run `api.index:app` from the environment, as a deployment does.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lib.standin import StandinState, create_standin_app
from tests.conftest import CANARY_TOKEN
from tests.redis_server import RedisServer, run_redis_server
from tests.secret_audit import AUDIT
from tests.servers import free_port, serve_on_loopback, wait_until_healthy

REPO = Path(__file__).resolve().parent.parent
BURST_KEY = "pg_test_canary_key_burst"
BUDGET_KEY = "pg_test_canary_key_budget"
STREAM_KEY = "pg_test_canary_key_stream"
ADMIN_KEY = "pg_test_canary_admin_shared"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}
# The stand-in counts words: "Hello?" is 1 prompt token; its answer, 8 completion tokens.
TOKENS_PER_HELLO = 9
DAILY_TOKENS = 40


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


POLICY = f"""
[keys.burst]
sha256 = "{_sha(BURST_KEY)}"
rpm = 30

[keys.budget]
sha256 = "{_sha(BUDGET_KEY)}"
daily_tokens = {DAILY_TOKENS}

[keys.stream]
sha256 = "{_sha(STREAM_KEY)}"
tpm = 100000

[admins.ops]
sha256 = "{_sha(ADMIN_KEY)}"
"""


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
            "KEYS_TOML": POLICY,
            "REDIS_URL": redis.url,
            "LIMITS_ON_STORE_ERROR": "closed",  # a fallback would hide a sharing bug
            # 100 requests at once on a shared 2-core machine: the bound is tested elsewhere.
            "LIMITS_STORE_TIMEOUT_S": "2",
            "LOG_LEVEL": "WARNING",
        }
        processes, urls, outputs = [], [], []
        try:
            for parser in ("httptools", "h11"):  # Vercel's runtime serves with h11
                port = free_port()
                output = (workdir / f"proxy-{port}.log").open("wb")
                outputs.append(output)
                command = [sys.executable, "-m", "uvicorn", "api.index:app", "--host"]
                command += ["127.0.0.1", "--port", str(port), "--log-level", "warning"]
                command += ["--http", parser]
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


@pytest.fixture(autouse=True)
def _fresh_counts(deployment: Deployment) -> None:
    """Empty Redis, and keep each test inside one wall-clock minute (the processes' clock)."""
    deployment.redis.flush()
    into_minute = time.time() % 60
    if into_minute > 45:
        time.sleep(60 - into_minute + 0.2)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _burst(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions", json=HELLO, headers=_auth(key)
                )
                for i in range(count)
            )
        )


def test_two_processes_admit_exactly_the_rpm_under_100_concurrent_requests(
    deployment: Deployment,
) -> None:
    responses = asyncio.run(_burst(deployment.urls, BURST_KEY, 100))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 30, sorted(set(statuses))
    assert statuses.count(429) == 70
    for response in responses:
        assert response.headers["x-ratelimit-limit-requests"] == "30"
        assert "x-ratelimit-remaining-requests" in response.headers
        assert "x-ratelimit-reset-requests" in response.headers
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(response.headers["retry-after"]) <= 60
    # Each process answered 50, more than 30: had they counted apart, each would admit 30.
    answered_by = [r.url.port for r in responses]
    assert sorted(answered_by.count(port) for port in set(answered_by)) == [50, 50]


def test_token_budget_runs_out_at_the_right_request_across_processes(
    deployment: Deployment,
) -> None:
    statuses = []
    for i in range(7):
        url = deployment.urls[i % 2]
        response = httpx.post(
            f"{url}/v1/chat/completions", json=HELLO, headers=_auth(BUDGET_KEY), timeout=30
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert response.json()["usage"]["total_tokens"] == TOKENS_PER_HELLO
    # Admitted while its reserve (49 bytes / 4 = 13 tokens) fits: before-counts 0, 9, 18, 27;
    # then 36 + 13 > 40, refused.
    admitted = (DAILY_TOKENS - math.ceil(49 / 4)) // TOKENS_PER_HELLO + 1
    assert statuses == [200] * admitted + [429] * (7 - admitted)


def test_openai_sdk_gets_rate_limit_error_and_does_not_retry_a_spent_day(
    deployment: Deployment,
) -> None:
    import openai

    sent: list[str] = []
    http_client = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    base_url = f"{deployment.urls[0]}/v1"
    budget = openai.OpenAI(base_url=base_url, api_key=BUDGET_KEY, http_client=http_client)
    answered = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(10):
            budget.chat.completions.create(model="HuggingFaceTB/SmolLM3-3B", **HELLO)
            answered += 1
    assert "tokens for today" in caught.value.message
    assert caught.value.code == "insufficient_quota"
    # Some admitted, then one refusal: the SDK (2 retries by default) did not retry it.
    assert answered >= 2 and answered * TOKENS_PER_HELLO <= DAILY_TOKENS
    assert len(sent) == answered + 1

    burst = openai.OpenAI(base_url=base_url, api_key=BURST_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(31):
            burst.chat.completions.create(model="HuggingFaceTB/SmolLM3-3B", **HELLO)
    assert "30 requests per minute" in caught.value.message
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_stream_the_caller_hangs_up_on_counts_what_was_relayed(
    deployment: Deployment,
) -> None:
    url = deployment.urls[1]
    prompt = "tell me a long story about proxies and keys and budgets"
    body = {"messages": [{"role": "user", "content": prompt}], "stream": True}
    deployment.standin.token_delay_s = 0.1  # one word every 0.1 s
    received = ""
    ends = len(deployment.standin.stream_ends)
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=_auth(STREAM_KEY), timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received += line
                    if received.count("data: ") == 4:
                        break  # hang up mid-stream
    finally:
        deployment.standin.token_delay_s = 0.0
    # The relay settles the request's reservation before it closes the upstream stream.
    deadline = time.monotonic() + 10
    while len(deployment.standin.stream_ends) <= ends and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    remaining = httpx.get(f"{url}/api/limits", headers=_auth(STREAM_KEY)).json()["remaining"]
    spent = 100000 - remaining["tokens_this_minute"]
    # No usage arrived: the prompt and the words relayed, estimated at 4 characters a token.
    prompt_tokens = math.ceil(len(prompt) / 4)
    whole_answer = len("Hello from the stand-in upstream! You said: " + prompt)
    assert prompt_tokens < spent < prompt_tokens + math.ceil(whole_answer / 4)


def test_usage_from_both_processes_adds_up_in_one_ledger(deployment: Deployment) -> None:
    for i in range(5):
        url = deployment.urls[i % 2]
        response = httpx.post(
            f"{url}/v1/chat/completions", json=HELLO, headers=_auth(STREAM_KEY), timeout=30
        )
        assert response.status_code == 200
    bad = httpx.post(
        f"{deployment.urls[1]}/v1/chat/completions",
        json={"messages": "?"},
        headers=_auth(STREAM_KEY),
        timeout=30,
    )
    assert bad.status_code == 422
    for url in deployment.urls:  # either instance reads the one ledger
        report = _usage_once_counted(url, "stream", requests=6)
        assert report["store"] == "redis"
        assert report["totals"]["requests"] == 6
        assert report["totals"]["refused"] == 1
        assert report["totals"]["total_tokens"] == 5 * TOKENS_PER_HELLO
    stranger = httpx.get(f"{deployment.urls[0]}/api/usage", headers=_auth(STREAM_KEY))
    assert stranger.status_code == 403


def _usage_once_counted(url: str, key: str, *, requests: int) -> dict:
    """The usage report of `key`, read until it holds `requests` (a second at most): each
    count is handed to Redis before its response ends, its reply read in the background."""
    deadline = time.monotonic() + 1.0
    while True:
        read = httpx.get(
            f"{url}/api/usage", params={"key": key}, headers=_auth(ADMIN_KEY), timeout=30
        )
        assert read.status_code == 200, read.text
        report = read.json()
        if report["totals"]["requests"] >= requests or time.monotonic() > deadline:
            return report
        time.sleep(0.02)
