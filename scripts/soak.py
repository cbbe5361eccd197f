"""Soak: thousands of mixed requests to the proxy on loopback; fails if its memory or fds grow.

Usage: .venv/bin/python -m scripts.soak [--requests 5000] [--warmup 500] [--concurrency 16]
       make soak SOAK_ARGS="--requests 20000"

The proxy runs under uvicorn in its own process, so its resident memory (VmRSS in
/proc/PID/status) and open file descriptors (/proc/PID/fd) are read from outside; the
stand-in upstream runs in another process. The mix: chat (streamed and not), generate
(streamed and not), embeddings, a task route, and failures: upstream 429, flapping 502s,
upstream 401, upstream 404, resets and non-JSON bodies, bad client keys, invalid bodies,
a disallowed model, streams cut short or failing mid-way, callers hanging up while
waiting and mid-stream, callers who stop reading a flooding stream (and hold their socket
past the deadline), keyless callers dripping a large upload, and keyed ones too slow to
send their body. Every answer is checked against what its kind should get, and ordinary
chat calls must answer within the deadline whatever the hostile callers hold.

After a warm-up the figures are taken at the start and at the end (each once idle
connections have closed). Exit 0: all within bounds; 1: memory or fds grew beyond the
bound, an answer was not what its kind should get, or the time limit passed; 2: the
servers did not start. Loopback only; bounded in requests and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lib.standin import STANDIN_TOKEN

ROOT = Path(__file__).resolve().parents[1]
CLIENT_KEY = "pg_soak_client_key_not_a_secret"
CHAT_MODEL = "HuggingFaceTB/SmolLM3-3B"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TASK_MODEL = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
MISSING_MODEL = "soak/missing-model"  # the stand-in answers 404 for names holding "missing"
DEADLINE_S = 5.0  # below the stand-in's Retry-After of 7 s, so a 429 is passed on at once
BODY_TIMEOUT_S = 2.0

Outcome = str  # "200", "429", ... or "200+error-event", "hung-up"


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: how often, how to send it, what it must get."""

    name: str
    weight: int
    expected: Outcome
    send: Callable[[httpx.AsyncClient, int], Awaitable[Outcome]]


def _user(i: int, tag: str = "") -> dict[str, Any]:
    text = f"soak request {i} with a few words to echo back {tag}".strip()
    return {"messages": [{"role": "user", "content": text}]}


async def _post(client: httpx.AsyncClient, path: str, body: Any, **kwargs: Any) -> Outcome:
    response = await client.post(path, json=body, **kwargs)
    if response.status_code >= 400:
        error = response.json().get("error")  # every error is JSON, in the error shape
        assert error, response.text
    return str(response.status_code)


async def _stream(client: httpx.AsyncClient, path: str, body: Any, hang_up_after: int = 0) -> str:
    """POST a streaming request; `hang_up_after` > 0 closes it after that many events."""
    last, events = "", 0
    async with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return str(response.status_code)
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last, events = line.removeprefix("data: "), events + 1
                if events == hang_up_after:
                    return "hung-up"
    if last == "[DONE]":
        return "200"
    return "200+error-event" if '"error"' in last else f"200+truncated:{last[:60]}"


async def _hang_up_while_waiting(client: httpx.AsyncClient, i: int) -> Outcome:
    try:
        await client.post("/v1/chat/completions", json=_user(i, "#standin:slow"), timeout=0.3)
    except httpx.ReadTimeout:
        return "hung-up"
    return "answered"


async def _raw_request(base_url: str, head: str, body: bytes = b"") -> socket.socket:
    """A connected socket, with a small receive buffer, that has sent `head` and `body`."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, head.encode() + body)
    return sock


async def _status_within(sock: socket.socket, seconds: float) -> Outcome:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds):
            first = await loop.sock_recv(sock, 64)
    except TimeoutError:
        return "no-answer"
    finally:
        sock.close()
    return first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/1.1 ") else "dropped"


async def _stop_reading_a_stream(client: httpx.AsyncClient, i: int) -> Outcome:
    body = f'{{"messages":[{{"role":"user","content":"soak {i} #standin:flood"}}],"stream":true}}'
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {CLIENT_KEY}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = await _raw_request(str(client.base_url).rstrip("/"), head, body.encode())
    await asyncio.sleep(DEADLINE_S + 1)  # holding the socket, never reading it
    sock.close()
    return "held"


async def _drip_a_keyless_upload(client: httpx.AsyncClient, i: int) -> Outcome:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    )
    sock = await _raw_request(str(client.base_url).rstrip("/"), head, b"{")
    return await _status_within(sock, BODY_TIMEOUT_S)  # refused before the body: 401


async def _send_a_body_too_slowly(client: httpx.AsyncClient, i: int) -> Outcome:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {CLIENT_KEY}"
        "\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    sock = await _raw_request(str(client.base_url).rstrip("/"), head, b'{"messages":')
    return await _status_within(sock, BODY_TIMEOUT_S + 3)  # 408 at BODY_TIMEOUT_S


async def _chat_within_the_deadline(client: httpx.AsyncClient, i: int) -> Outcome:
    started = time.monotonic()
    outcome = await _post(client, "/v1/chat/completions", _user(i))
    took = time.monotonic() - started
    return outcome if took < DEADLINE_S else f"{outcome}-after-{took:.1f}s"


def _kinds() -> list[Kind]:
    chat, gen = "/v1/chat/completions", "/api/generate"

    def tagged(tag: str) -> Callable[[httpx.AsyncClient, int], Awaitable[Outcome]]:
        return lambda c, i: _post(c, chat, _user(i, tag))

    def streamed(tag: str, hang_up_after: int = 0):
        return lambda c, i: _stream(c, chat, {**_user(i, tag), "stream": True}, hang_up_after)

    return [
        Kind("chat", 20, "200", _chat_within_the_deadline),
        Kind("chat-stream", 14, "200", streamed("")),
        Kind("generate", 8, "200", lambda c, i: _post(c, gen, {"prompt": f"soak {i}"})),
        Kind(
            "generate-stream",
            5,
            "200",
            lambda c, i: _stream(c, gen, {"prompt": f"soak {i}", "stream": True}),
        ),
        Kind(
            "embeddings",
            8,
            "200",
            lambda c, i: _post(c, "/v1/embeddings", {"input": [f"soak {i}", "second text"]}),
        ),
        Kind(
            "task",
            6,
            "200",
            lambda c, i: _post(c, f"/models/{TASK_MODEL}", {"inputs": f"I love soak {i}"}),
        ),
        Kind("upstream-429", 4, "429", tagged("#standin:429")),
        Kind("upstream-502-flapping", 3, "502", tagged("#standin:502")),
        Kind("upstream-401", 3, "502", tagged("#standin:401")),
        Kind(
            "upstream-404",
            2,
            "404",
            lambda c, i: _post(c, f"/models/{MISSING_MODEL}", {"inputs": "soak"}),
        ),
        Kind("upstream-reset", 2, "502", tagged("#standin:reset")),
        Kind("upstream-not-json", 2, "502", tagged("#standin:notjson")),
        Kind(
            "bad-client-key",
            4,
            "401",
            lambda c, i: _post(c, chat, _user(i), headers={"Authorization": "Bearer wrong-key-0"}),
        ),
        Kind("invalid-body", 4, "422", lambda c, i: _post(c, chat, {"messages": [], "n": i})),
        Kind(
            "model-not-allowed", 2, "403", lambda c, i: _post(c, chat, {**_user(i), "model": "x/y"})
        ),
        Kind("stream-cut-short", 4, "200+error-event", streamed("#standin:cut")),
        Kind("stream-error-mid-way", 2, "200+error-event", streamed("#standin:midError")),
        Kind("hang-up-mid-stream", 4, "hung-up", streamed("#standin:drip", hang_up_after=2)),
        Kind("hang-up-while-waiting", 2, "hung-up", _hang_up_while_waiting),
        Kind("stop-reading-a-stream", 1, "held", _stop_reading_a_stream),
        Kind("keyless-slow-upload", 2, "401", _drip_a_keyless_upload),
        Kind("body-too-slow", 1, "408", _send_a_body_too_slowly),
    ]


@dataclass
class Tally:
    """What a batch of requests got."""

    statuses: Counter[str]
    unexpected: Counter[str]
    examples: list[str]
    seconds: float

    def record(self, kind: Kind, outcome: Outcome) -> None:
        self.statuses[outcome] += 1
        if outcome != kind.expected:
            self.unexpected[kind.name] += 1
            if len(self.examples) < 5:
                self.examples.append(f"{kind.name}: expected {kind.expected}, got {outcome}")


async def _run_batch(base_url: str, plan: list[Kind], concurrency: int, first: int) -> Tally:
    tally = Tally(Counter(), Counter(), [], 0.0)
    queue = iter(enumerate(plan, start=first))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=15.0, limits=limits
    ) as client:

        async def worker() -> None:
            for i, kind in queue:
                try:
                    outcome = await kind.send(client, i)
                except (httpx.HTTPError, AssertionError, ValueError) as exc:
                    outcome = f"client-error:{type(exc).__name__}"
                tally.record(kind, outcome)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        tally.seconds = time.monotonic() - started
    return tally


def _figures(pid: int) -> tuple[float, int]:
    """The process's resident memory in MiB and its number of open file descriptors."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, "no VmRSS in /proc/PID/status"
    return int(match.group(1)) / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def _idle_figures(pid: int) -> tuple[float, int]:
    """The figures once the fd count has settled (closed connections are gone)."""
    previous = _figures(pid)
    for _ in range(30):
        time.sleep(0.2)
        current = _figures(pid)
        if current[1] == previous[1]:
            return current
        previous = current
    return previous


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(factory: str, env: dict[str, str], log: Any) -> tuple[subprocess.Popen, str]:
    """Serve `factory` under uvicorn in a new process on loopback; wait until it answers."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"{url}/api/health" if "lib.app" in factory else url, timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{factory} did not start on {url}")


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def _proxy_env(standin_url: str) -> dict[str, str]:
    env = _base_env()
    env.update(
        HF_TOKEN=STANDIN_TOKEN,
        HF_BASE_URL=standin_url,
        PROXY_API_KEYS=CLIENT_KEY,
        ALLOWED_MODELS=",".join([CHAT_MODEL, EMBEDDING_MODEL, TASK_MODEL, MISSING_MODEL]),
        REQUEST_TIMEOUT_S=str(DEADLINE_S),
        STREAM_IDLE_TIMEOUT_S="3",
        BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        UPSTREAM_MAX_ATTEMPTS="3",
        LOG_LEVEL="INFO",
    )
    return env


def _plan(count: int, rng: random.Random) -> list[Kind]:
    kinds = _kinds()
    return rng.choices(kinds, weights=[k.weight for k in kinds], k=count)


def _print_tally(label: str, tally: Tally, count: int) -> None:
    statuses = " ".join(f"{k}={v}" for k, v in sorted(tally.statuses.items()))
    print(f"{label}: {count} requests in {tally.seconds:.1f} s, {count / tally.seconds:.0f} req/s")
    print(f"  outcomes: {statuses}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: counts, concurrency, bounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-rss-growth-mb", type=float, default=10.0)
    parser.add_argument("--max-fd-growth", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="for the whole run")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when within bounds, 1 otherwise, 2 when the servers did not start."""
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        log_path = Path(tmp, "servers.log")
        with log_path.open("wb") as log:
            processes: list[subprocess.Popen] = []
            try:
                standin, standin_url = _start("lib.standin:create_standin_app", _base_env(), log)
                processes.append(standin)
                proxy, proxy_url = _start("lib.app:create_app", _proxy_env(standin_url), log)
                processes.append(proxy)
            except RuntimeError as exc:
                print(f"soak: {exc}; log: {log_path.read_text()[-2000:]}", file=sys.stderr)
                for process in processes:
                    process.kill()
                return 2
            try:
                return _soak(args, rng, proxy.pid, proxy_url)
            finally:
                for process in processes:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()


def _soak(args: argparse.Namespace, rng: random.Random, pid: int, url: str) -> int:
    print(
        f"soak: proxy pid {pid} on {url}; {args.warmup} warm-up + {args.requests} requests, "
        f"concurrency {args.concurrency}"
    )
    deadline = time.monotonic() + args.max_seconds

    def run(plan: list[Kind], first: int) -> Tally:
        remaining = max(1.0, deadline - time.monotonic())
        batch = _run_batch(url, plan, args.concurrency, first)
        return asyncio.run(asyncio.wait_for(batch, timeout=remaining))

    try:
        # Every kind at least once before the start figures: the first flood, say, grows the
        # heap once, which is not a leak.
        warm = run(_kinds() + _plan(max(args.warmup - len(_kinds()), 0), rng), 0)
        _print_tally("warm-up", warm, args.warmup)
        rss_start, fds_start = _idle_figures(pid)
        print(f"start: rss {rss_start:.1f} MiB, open fds {fds_start}")
        measured = run(_plan(args.requests, rng), args.warmup)
    except TimeoutError:
        print(f"FAIL: the soak did not finish within {args.max_seconds:g} s")
        return 1
    rss_end, fds_end = _idle_figures(pid)
    print(f"end:   rss {rss_end:.1f} MiB, open fds {fds_end}")
    _print_tally("measured", measured, args.requests)
    rss_growth, fd_growth = rss_end - rss_start, fds_end - fds_start
    print(
        f"growth: rss {rss_growth:+.1f} MiB (bound {args.max_rss_growth_mb:g}), "
        f"fds {fd_growth:+d} (bound {args.max_fd_growth})"
    )
    failures = []
    if rss_growth > args.max_rss_growth_mb:
        failures.append(f"rss grew {rss_growth:.1f} MiB")
    if fd_growth > args.max_fd_growth:
        failures.append(f"open fds grew by {fd_growth}")
    unexpected = warm.unexpected + measured.unexpected
    if unexpected:
        failures.append(f"unexpected answers: {dict(unexpected)}")
        for example in warm.examples + measured.examples:
            print(f"  {example}")
    print(f"FAIL: {'; '.join(failures)}" if failures else "OK: within bounds")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
