"""The soak script runs end to end on a tiny load. The real soak is `make soak` (docs/soak.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_soak(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m scripts.soak ARGS` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "scripts.soak", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tiny_soak_prints_the_figures_and_passes() -> None:
    result = run_soak("--requests", "150", "--warmup", "40", "--concurrency", "8")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for moment in ("start", "end"):
        assert re.search(rf"^{moment}: +rss \d+\.\d MiB, open fds \d+$", out, re.MULTILINE), out
    assert re.search(r"^measured: 150 requests in [\d.]+ s, \d+ req/s$", out, re.MULTILINE), out
    assert re.search(r"^growth: rss [-+]\d+\.\d MiB \(bound 10\), fds [-+]\d+", out, re.M), out
    outcomes = re.search(r"^  outcomes: (.*)$", out.split("measured:")[1], re.MULTILINE)
    assert outcomes and "200=" in outcomes.group(1), out
    assert out.rstrip().endswith("OK: within bounds")


def test_growth_beyond_the_bound_fails_the_soak() -> None:
    # No run can shrink its fds by 1000, so this bound is always exceeded.
    result = run_soak("--requests", "20", "--warmup", "10", "--max-fd-growth", "-1000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL: open fds grew by" in result.stdout
