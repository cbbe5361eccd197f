"""The benchmark suite runs end to end on a tiny load. Speed is for `make bench`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import missing_tools

ROOT = Path(__file__).resolve().parent.parent
_NUMBER = r"[\d,]+(?:\.\d+)?"


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    """Skip, loudly, without nginx or wrk (under CI, conftest turns the skip into a failure)."""
    if missing := missing_tools():
        pytest.skip(
            f"NOT TESTED: bench smoke test needs {', '.join(missing)}: "
            "apt-get install nginx-light wrk redis-server (.ci/run does)"
        )


def test_tiny_run_prints_and_writes_a_table_of_figures(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = out.read_text()
    assert written in result.stdout
    assert "- Machine: " in written and "- Python 3." in written
    for scenario in ("chat", "chat stream", "embeddings"):
        for target in ("proxy", "reference httpx"):
            row = rf"^\| {scenario} \| \d+ \| {target} \| {_NUMBER} \| {_NUMBER} \| {_NUMBER} \|"
            assert re.search(row, written, re.MULTILINE), f"no {scenario}/{target} row:\n{written}"
    # target | first byte ms | added | vs floor | held back | max event delay | peak RSS MiB
    n = _NUMBER
    row = rf"^\| proxy \| ({n}) \| -?{n} \| [^|]+ \| \d \| {n} \| ({n}) \|$"
    proxy_stream = re.search(row, written, re.MULTILINE)
    assert proxy_stream, written
    first_byte_ms, peak_rss_mib = proxy_stream.groups()
    assert float(first_byte_ms) > 0 and float(peak_rss_mib) > 10
    assert re.search(r"^\| proxy \| chat stream \| .* (met|MISSED) \|$", written, re.MULTILINE)
    # The limits-on scenario: the same proxy counting in Redis, against it without limits.
    assert "Limits on (`proxy + limits`" in written
    row = rf"^\| chat \| {n} \| {n} \| [+-]{n} (met|MISSED) \| {n} \| {n} \| {n} (met|MISSED) \|$"
    assert re.search(row, written, re.MULTILINE), written
    # Issue 20's table: every figure from this run, the cold start not measured in a tiny one.
    assert "Issue 20's figures, this run" in written
    row = rf"^\| added p50 at 1 client \(chat\), vs the reference forwarder \| {n}x \| <= 1.0x \| "
    row += r"(met|MISSED) \|$"
    assert re.search(row, written, re.MULTILINE), written
    row = r"^\| spend control on vs off: added p50 at 1 client \(chat\) \| [+-][0-9.]+ ms \| "
    assert re.search(row, written, re.MULTILINE), written
    assert re.search(
        r"^\| cold start .* \| not measured \| <= 1.05x \|  \|$", written, re.MULTILINE
    )
    row = (
        r"^\| default \(serverless\) transport: req/s at 16 clients vs the reference \| [0-9.]+x \|"
    )
    assert re.search(row, written, re.MULTILINE), written
