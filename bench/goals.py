"""The performance issue's (#20) figures, in one table at the end of `make bench`.

Each figure is taken from the run it is printed in: the proxy (its built-in transport, what
serverless functions and containers run) against the reference forwarder over aiohttp, limits on
against off, the default transport against the same reference, and the cold start from
`bench.cold_start` (fresh processes, CPU time to import and answer a first chat, against a bare
FastAPI + httpx forwarder). LiteLLM is not installed by the bench; its figure stays the README's
published one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One row: what is measured, its value as shown, the goal as shown, and whether it is met."""

    name: str
    value: str
    goal: str
    met: bool | None  # None: not measured in this run


def figures(
    *,
    added_vs_reference: float,
    rps_vs_reference: float,
    limits_added_ms: float | None,
    limits_rps_ratio: float | None,
    cold_start_ratio: float | None,
    default_transport_rps_vs_reference: float | None,
) -> list[Figure]:
    """The table's rows from the run's figures (None where the run did not measure one)."""

    def ratio(name: str, value: float | None, goal: str, at_most: bool, bound: float) -> Figure:
        if value is None:
            return Figure(name, "not measured", goal, None)
        return Figure(name, f"{value:.2f}x", goal, value <= bound if at_most else value >= bound)

    chat_1, chat_16, on_off = (
        "at 1 client (chat)",
        "at 16 clients (chat)",
        "spend control on vs off",
    )
    added = (
        Figure(f"{on_off}: added p50 {chat_1}", "not measured", "<= +0.1 ms", None)
        if limits_added_ms is None
        else Figure(
            f"{on_off}: added p50 {chat_1}",
            f"{limits_added_ms:+.2f} ms",
            "<= +0.1 ms",
            limits_added_ms <= 0.1,
        )
    )
    return [
        ratio(
            f"added p50 {chat_1}, vs the reference forwarder",
            added_vs_reference,
            "<= 1.0x",
            True,
            1.0,
        ),
        ratio(
            f"req/s {chat_16}, vs the reference forwarder", rps_vs_reference, ">= 1.0x", False, 1.0
        ),
        added,
        ratio(f"{on_off}: req/s {chat_16}", limits_rps_ratio, ">= 0.95x", False, 0.95),
        ratio(
            "cold start to the first forwarded chat (CPU), vs a bare FastAPI forwarder",
            cold_start_ratio,
            "<= 1.05x",
            True,
            1.05,
        ),
        ratio(
            "default (serverless) transport: req/s at 16 clients vs the reference",
            default_transport_rps_vs_reference,
            ">= 0.7x",
            False,
            0.7,
        ),
        Figure(
            "vs LiteLLM's proxy, req/s at 16 clients",
            "not measured (README's figure)",
            ">= 10x",
            None,
        ),
    ]


def report(rows: list[Figure]) -> list[str]:
    """The Markdown table of `rows`."""
    lines = [
        "Issue 20's figures, this run (the reference: FastAPI + httpx's API over aiohttp).",
        "",
        "| figure | this run | goal | verdict |",
        "|---|---:|---:|---|",
    ]
    for figure in rows:
        verdict = "" if figure.met is None else ("met" if figure.met else "MISSED")
        lines.append(f"| {figure.name} | {figure.value} | {figure.goal} | {verdict} |")
    return lines
