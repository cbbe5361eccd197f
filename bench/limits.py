"""The limits-on scenario of `make bench`: the proxy counting every call in Redis on loopback.

The limited proxy is the proxy as it runs (its built-in transport) with a policy whose limits
are never reached, so every call pays for admission (one Lua script) and its ledger write, which
settles its tokens (a second one, not waited for), and nothing is refused. Compared with the
same proxy without limits, in one run.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import statistics
from collections.abc import Iterator

from tests.redis_server import run_redis_server

REDIS_URL_PLACEHOLDER = "{bench-redis-url}"
# Goals (issue 12): added p50 at 1 client at most +0.3 ms; req/s at 16 clients at least 0.85x.
MAX_ADDED_P50_MS = 0.3
MIN_RPS_RATIO = 0.85
# Goals (issue 21): what the usage ledger adds over limits alone.
LEDGER_MAX_ADDED_P50_MS = 0.1
LEDGER_MIN_RPS_RATIO = 0.95


def policy_for(key: str) -> str:
    """A policy giving `key` limits far above anything the benchmark sends."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (
        f'[keys.bench]\nsha256 = "{digest}"\n'
        "rpm = 1000000000\ntpm = 1000000000000\ndaily_tokens = 1000000000000\n"
    )


def needs_redis(env: dict[str, str]) -> bool:
    """True when a target's settings name the benchmark's Redis."""
    return env.get("REDIS_URL") == REDIS_URL_PLACEHOLDER


@contextlib.contextmanager
def redis_on_loopback() -> Iterator[str]:
    """Run Debian's redis-server on a free port, without persistence; yield its URL."""
    with run_redis_server(binary=shutil.which("redis-server") or "/usr/bin/redis-server") as server:
        yield server.url


def report(
    rows: dict[str, dict[tuple[int, str], tuple[list[float], list[float]]]],
    on: str,
    off: str,
    concurrencies: tuple[int, ...],
) -> list[str]:
    """The limits section: per scenario, limits on against off (p50 at 1 client, req/s at 16).

    `rows[scenario][(clients, target)]` holds the (p50 ms, req/s) of each round.
    """
    lowest, middle = concurrencies[0], concurrencies[1]
    title = (
        f"Limits on (`{on}`: Redis on loopback, every call admitted, its tokens counted and "
        f"added to the usage ledger) against off (`{off}`: the ledger in memory), same run. "
        f"Goals: added p50 at {lowest} client at most +{MAX_ADDED_P50_MS} ms; req/s at "
        f"{middle} clients at least {MIN_RPS_RATIO}x."
    )
    return compare(rows, on, off, concurrencies, title, MAX_ADDED_P50_MS, MIN_RPS_RATIO)


def ledger_report(
    rows: dict[str, dict[tuple[int, str], tuple[list[float], list[float]]]],
    on: str,
    off: str,
    concurrencies: tuple[int, ...],
) -> list[str]:
    """The ledger section (issue 21): limits with the usage ledger against limits alone."""
    lowest, middle = concurrencies[0], concurrencies[1]
    title = (
        f"The usage ledger on Redis (`{on}`) against limits alone (`{off}`: the same proxy "
        f"with the ledger's write left out, bench/proxy_variants.py), same run. Goals (issue "
        f"21): added p50 at {lowest} client under +{LEDGER_MAX_ADDED_P50_MS} ms; req/s at "
        f"{middle} clients at least {LEDGER_MIN_RPS_RATIO}x."
    )
    return compare(
        rows, on, off, concurrencies, title, LEDGER_MAX_ADDED_P50_MS, LEDGER_MIN_RPS_RATIO
    )


def compare(
    rows: dict[str, dict[tuple[int, str], tuple[list[float], list[float]]]],
    on: str,
    off: str,
    concurrencies: tuple[int, ...],
    title: str,
    max_added_ms: float,
    min_ratio: float,
) -> list[str]:
    """A table of `on` against `off` per scenario: p50 added at the lowest concurrency (the
    median of the rounds' differences), req/s ratio at the middle one."""
    lowest, middle = concurrencies[0], concurrencies[1]
    lines = [
        title,
        "",
        f"| scenario | p50 ms off | p50 ms on | added ms ({lowest} client) | req/s off | req/s on "
        f"| on vs off ({middle} clients) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, cells in rows.items():
        p50_off = statistics.median(cells[(lowest, off)][0])
        p50_on = statistics.median(cells[(lowest, on)][0])
        added = statistics.median(
            a - b for a, b in zip(cells[(lowest, on)][0], cells[(lowest, off)][0], strict=True)
        )
        rps_off = statistics.median(cells[(middle, off)][1])
        rps_on = statistics.median(cells[(middle, on)][1])
        ratio = rps_on / rps_off
        added_verdict = "met" if added <= max_added_ms else "MISSED"
        ratio_verdict = "met" if ratio >= min_ratio else "MISSED"
        lines.append(
            f"| {scenario} | {p50_off:.2f} | {p50_on:.2f} | {added:+.2f} {added_verdict} "
            f"| {rps_off:,.0f} | {rps_on:,.0f} | {ratio:.2f} {ratio_verdict} |"
        )
    return lines
