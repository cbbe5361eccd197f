"""The cache-hit scenario of `make bench` (issue 22): every call answered by the response cache.

The cached proxies are the proxy as deployed (its default transport) with a policy caching the
benchmark key's answers (`cache_nondeterministic`, since the scenarios send no temperature):
the first call of each scenario is a miss, every measured call a hit, so the upstream is
never called. One keeps the cache in process (the LRU), one in Redis on loopback. Compared,
in one run, with nginx called directly and with the same proxy without the cache.
"""

from __future__ import annotations

import hashlib
import statistics

# Goals (issue 22): a hit is faster than the uncached path by at least the upstream's own
# latency; on the in-process store a hit adds under 0.3 ms p50 over calling nginx directly.
MAX_MEMORY_HIT_ADDED_P50_MS = 0.3

Cells = dict[str, dict[tuple[int, str], tuple[list[float], list[float]]]]


def policy_for(key: str) -> str:
    """A policy caching every answer to `key` for an hour, sampled or not, without limits."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f'[keys.bench]\nsha256 = "{digest}"\ncache_ttl_s = 3600\ncache_nondeterministic = true\n'


def report(
    rows: Cells,
    *,
    direct: str,
    uncached: str,
    memory: str,
    redis: str | None,
    concurrencies: tuple[int, ...],
) -> list[str]:
    """Per scenario: p50 at the lowest concurrency of nginx, the uncached proxy and the hits,
    what a hit adds over nginx, and req/s at the middle concurrency on hits.

    `rows[scenario][(clients, target)]` holds the (p50 ms, req/s) of each round.
    """
    lowest, middle = concurrencies[0], concurrencies[1]
    hits = [memory] + ([redis] if redis else [])
    lines = [
        f"Cache hits (`{memory}`: the in-process LRU"
        + (f"; `{redis}`: Redis on loopback" if redis else "")
        + f") against nginx directly (`{direct}`) and the same proxy uncached (`{uncached}`), "
        f"same run; every measured call is a hit. Goals (issue 22): a hit faster than the "
        f"uncached path by at least the upstream's own latency (nginx's p50); on the "
        f"in-process store, a hit adds under {MAX_MEMORY_HIT_ADDED_P50_MS} ms p50 over nginx "
        f"at {lowest} client.",
        "",
        f"| scenario | target | p50 ms ({lowest} client) | added over nginx ms | faster than "
        f"uncached ms | req/s ({middle} clients) | req/s vs uncached |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario, cells in rows.items():
        nginx_p50 = statistics.median(cells[(lowest, direct)][0])
        uncached_p50 = statistics.median(cells[(lowest, uncached)][0])
        uncached_rps = statistics.median(cells[(middle, uncached)][1])
        lines.append(
            f"| {scenario} | {direct} | {nginx_p50:.2f} | | | "
            f"{statistics.median(cells[(middle, direct)][1]):,.0f} | |"
        )
        lines.append(
            f"| {scenario} | {uncached} | {uncached_p50:.2f} | "
            f"{_added(cells, lowest, uncached, direct):+.2f} | | {uncached_rps:,.0f} | 1.00 |"
        )
        for name in hits:
            p50 = statistics.median(cells[(lowest, name)][0])
            added = _added(cells, lowest, name, direct)
            faster = _added(cells, lowest, uncached, name)
            rps = statistics.median(cells[(middle, name)][1])
            added_cell = f"{added:+.2f}"
            if name == memory:
                met = added < MAX_MEMORY_HIT_ADDED_P50_MS
                added_cell += " met" if met else " MISSED"
            faster_verdict = "met" if faster >= nginx_p50 else "MISSED"
            lines.append(
                f"| {scenario} | {name} | {p50:.2f} | {added_cell} | {faster:.2f} "
                f"{faster_verdict} | {rps:,.0f} | {rps / uncached_rps:.2f} |"
            )
    return lines


def _added(
    cells: dict[tuple[int, str], tuple[list[float], list[float]]],
    clients: int,
    target: str,
    base: str,
) -> float:
    """The median over rounds of `target`'s p50 minus `base`'s in the same round."""
    pairs = zip(cells[(clients, target)][0], cells[(clients, base)][0], strict=True)
    return statistics.median(a - b for a, b in pairs)
