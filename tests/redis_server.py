"""A real `redis-server` on a free loopback port, started and stopped by the tests.

`.ci/run` installs Debian's redis-server. Without it the Redis tests skip, saying why
(under `CI=true`, tests/conftest.py turns the skip into a failure). `make bench` starts its
Redis with the same `run_redis_server`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RedisServer:
    """One redis-server process: its URL, and ways to make it misbehave."""

    port: int
    process: subprocess.Popen[bytes]
    password: str | None = None
    tls_port: int | None = None  # also served over TLS there, when started with `tls`

    @property
    def url(self) -> str:
        """The `redis://` URL the proxy is given (with the password, when there is one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self, *args: str) -> str:
        """Run one command with a fresh connection (RESP inline), return the raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            if self.password:
                conn.sendall(f"AUTH {self.password}\r\n".encode())
                assert b"+OK" in conn.recv(1024)
            conn.sendall(" ".join(args).encode() + b"\r\n")
            return conn.recv(65536).decode()

    def kill(self) -> None:
        """End the server at once, as a crash would."""
        self.process.kill()
        self.process.wait(timeout=10)

    def flush(self) -> None:
        """Forget every count."""
        assert "+OK" in self.command("FLUSHALL")

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Freeze the server (SIGSTOP): it accepts connections and answers nothing."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


def redis_server_binary() -> str:
    """The redis-server to run; skip, saying why, when there is none."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        import pytest  # the benchmark, which checks for redis-server itself, never gets here

        pytest.skip(
            "NOT TESTED: redis-server is not installed (apt-get install redis-server; .ci/run does)"
        )
    return binary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def run_redis_server(
    password: str | None = None,
    binary: str | None = None,
    tls: tuple[str, str] | None = None,
) -> Iterator[RedisServer]:
    """Start redis-server (`binary`, else the one installed) on a free port, with no
    persistence; with `tls` (certificate and key files), also on a TLS port; stop it on exit."""
    binary = binary or redis_server_binary()
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password:
        args += ["--requirepass", password]
    tls_port = None
    if tls:
        tls_port = _free_port()
        args += ["--tls-port", str(tls_port), "--tls-cert-file", tls[0], "--tls-key-file", tls[1]]
        args += ["--tls-auth-clients", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, process, password, tls_port)
    try:
        _wait_for_ping(server)
    except RuntimeError:
        process.kill()
        raise
    try:
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(timeout=10)


@contextmanager
def run_redis_cluster(directory: Path, nodes: int = 3) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of `nodes` masters on loopback (no replicas), its slots spread by
    `redis-cli --cluster create`; node files live in `directory`. Stopped on exit."""
    binary = redis_server_binary()
    servers: list[RedisServer] = []
    try:
        for _ in range(nodes):
            port = _free_cluster_port()
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--cluster-enabled", "yes"]
            args += ["--cluster-config-file", f"nodes-{port}.conf"]
            args += ["--cluster-node-timeout", "2000"]
            process = subprocess.Popen(
                args, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            servers.append(RedisServer(port, process))
        for server in servers:
            _wait_for_ping(server)
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in s.command("CLUSTER", "INFO") for s in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.1)
        yield servers
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.process.terminate()
                server.process.wait(timeout=10)


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid too."""
    for _ in range(100):
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _wait_for_ping(server: RedisServer) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            if "PONG" in server.command("PING"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
