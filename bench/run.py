"""`make bench`: what the proxy adds over calling the upstream directly, and over a bare forwarder.

Everything runs on loopback: nginx serves fixed bodies (bench/upstream.py), the proxy and the
reference forwarders run under uvicorn (one process each), and wrk generates the load. Runs are
interleaved (every target once per round) so that drift on a shared machine hits all alike, and
every figure is the median over rounds. Usage:

    python -m bench.run                 # the suite; prints the table, writes bench/results.md
    python -m bench.run --tiny --out X  # seconds-long smoke run (tests/test_bench_smoke.py)
    python -m bench.run --explore       # also the variants compared in bench/performance.md
    python -m bench.run --limits        # only the limits-on scenario and what it is compared to
    python -m bench.run --cache         # only the cache-hit scenario and what it is compared to
    python -m bench.run --proposal A.diff [--proposal B.diff]
                                        # also the proxy with A (then A and B) applied to lib/
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import cache, cold_start, goals, holdback, limits, ttfb
from bench.upstream import (
    MODEL,
    STREAM_REQUEST_ID,
    NginxUpstream,
    free_port,
    nginx_path,
    wait_for_port,
)
from lib.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
# Canary values, never real secrets: the upstream is nginx and ignores them.
BENCH_TOKEN = "hf_test_canary_bench_token_0b7e"
BENCH_KEY = "pg_test_canary_bench_key_93c1"


@dataclass(frozen=True)
class Scenario:
    """One kind of call: the path, the JSON body, and whether the answer streams."""

    name: str
    path: str
    body: dict
    expect: bytes  # in every good answer
    stream: bool = False


_PROMPT = [{"role": "user", "content": "Say hello in five words."}]
_CHAT = {"model": MODEL, "messages": _PROMPT, "max_tokens": 32}
# One line each; nginx (bench/upstream.py) answers what the proxy and the forwarder call.
SCENARIOS = [
    Scenario("chat", "/v1/chat/completions", _CHAT, b'"object":"chat.completion"'),
    Scenario("chat stream", "/v1/chat/completions", {**_CHAT, "stream": True}, b"[DONE]", True),
    Scenario("embeddings", "/v1/embeddings", {"input": "The first sentence."}, b'"embedding"'),
]


@dataclass(frozen=True)
class Target:
    """Something to load: nginx itself (`app` None) or an ASGI app served by uvicorn."""

    name: str
    role: str  # "direct", "proxy", "reference" or "variant"
    app: str | None = None
    factory: bool = False
    env: dict[str, str] = field(default_factory=dict)
    server: str | None = None  # "uvloop" or "asyncio"; None: the run's default
    app_dir: Path = ROOT  # where `app` is imported from


_PROXY_ENV = {"HF_TOKEN": BENCH_TOKEN, "PROXY_API_KEYS": BENCH_KEY, "LOG_LEVEL": "INFO"}
DIRECT = Target("direct (nginx)", "direct")
PROXY = Target("proxy", "proxy", "lib.app:create_app", factory=True, env=_PROXY_ENV)
REFERENCE = Target("reference httpx", "reference", "bench.reference_forwarder:app")
REFERENCE_AIOHTTP = Target(
    "reference aiohttp",
    "reference",
    "bench.reference_forwarder:app",
    env={"BENCH_TRANSPORT": "aiohttp"},
)
PROXY_AIOHTTP = Target(
    "proxy aiohttp transport",
    "variant",
    "bench.proxy_variants:proxy_with_aiohttp",
    factory=True,
    env=_PROXY_ENV,
)
# The proxy over aiohttp's pool (UPSTREAM_TRANSPORT=aiohttp), what containers ran until the
# built-in transport served more for less.
PROXY_AIOHTTP_POOL = Target(
    "proxy aiohttp",
    "variant",
    "lib.app:create_app",
    factory=True,
    env={**_PROXY_ENV, "UPSTREAM_TRANSPORT": "aiohttp"},
)
# The proxy over httpx's own pool (UPSTREAM_TRANSPORT=httpx), the serverless default until
# the built-in transport (lib/upstream/http11.py) replaced it.
PROXY_HTTPX = replace(
    PROXY,
    name="proxy httpx pool",
    role="variant",
    env={**_PROXY_ENV, "UPSTREAM_TRANSPORT": "httpx"},
)
# The proxy counting every call in Redis (bench/limits.py), against PROXY.
PROXY_LIMITS = replace(
    PROXY,
    name="proxy + limits",
    role="variant",
    env={
        **PROXY.env,
        "KEYS_TOML": limits.policy_for(BENCH_KEY),
        "REDIS_URL": limits.REDIS_URL_PLACEHOLDER,
    },
)
# Limits alone, without the usage ledger's write: what the ledger adds, against PROXY_LIMITS.
PROXY_LIMITS_NO_LEDGER = replace(
    PROXY_LIMITS,
    name="proxy + limits, no ledger",
    app="bench.proxy_variants:proxy_without_ledger",
)
# The proxy answering from the response cache (bench/cache.py): in process, and in Redis on
# loopback; against PROXY, uncached.
PROXY_CACHE = replace(
    PROXY,
    name="proxy + cache hits",
    role="variant",
    env={**PROXY.env, "KEYS_TOML": cache.policy_for(BENCH_KEY)},
)
PROXY_CACHE_REDIS = replace(
    PROXY_CACHE,
    name="proxy + cache hits, Redis",
    env={**PROXY_CACHE.env, "REDIS_URL": limits.REDIS_URL_PLACEHOLDER},
)
SUITE = [
    DIRECT,
    PROXY,
    PROXY_HTTPX,
    PROXY_AIOHTTP_POOL,
    PROXY_LIMITS,
    PROXY_LIMITS_NO_LEDGER,
    REFERENCE,
    REFERENCE_AIOHTTP,
]
TINY = list(SUITE)
# The options compared in bench/performance.md, each one change from the proxy as it is.
EXPLORE = [
    *SUITE,
    PROXY_AIOHTTP,
    replace(PROXY, name="proxy asyncio+h11", role="variant", server="asyncio"),
    Target(
        "proxy httpx keepalive=200",
        "variant",
        "bench.proxy_variants:proxy_with_httpx_pool",
        True,
        _PROXY_ENV,
    ),
    replace(
        PROXY,
        name="proxy no access log",
        role="variant",
        env={**_PROXY_ENV, "LOG_LEVEL": "WARNING"},
    ),
]
# With --explore, variants of the last proposal.
_PROPOSAL_VARIANTS = {
    "proposals asyncio+h11": {"server": "asyncio"},
    "proposals no access log": {"env": {**_PROXY_ENV, "LOG_LEVEL": "WARNING"}},
}
_SERVERS = {"uvloop": ("uvloop", "httptools"), "asyncio": ("asyncio", "h11")}


@dataclass
class Measurement:
    """One wrk run: requests/s and latency percentiles in milliseconds."""

    rps: float
    p50_ms: float
    p99_ms: float


@dataclass
class Running:
    """A target being served: its port and (for apps) its uvicorn process."""

    target: Target
    port: int
    process: subprocess.Popen[bytes] | None = None

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident set size so far (VmHWM), in MiB."""
        if self.process is None:
            return None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None


@dataclass
class Options:
    """How long and how hard to measure."""

    rounds: int = 5
    duration_s: int = 2
    warmup: bool = True
    concurrencies: tuple[int, ...] = (1, 16, 64)
    ttfb_samples: int = 200
    server: str = "uvloop"
    targets: list[Target] = field(default_factory=lambda: list(SUITE))
    cold_start_runs: int = 5  # fresh processes per cold-start scenario; 0: not measured


def missing_tools() -> list[str]:
    """The external programs the suite needs that are not installed."""
    missing = [] if shutil.which("wrk") else ["wrk"]
    missing += (
        []
        if shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()
        else ["redis-server"]
    )
    return missing + ([] if nginx_path() else ["nginx"])


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table, write the results file; 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--explore", action="store_true", help="also measure the variants")
    parser.add_argument(
        "--limits", action="store_true", help="only limits on against off (bench/limits.py)"
    )
    parser.add_argument(
        "--transports",
        action="store_true",
        help="only the proxy over each upstream transport, against the references",
    )
    parser.add_argument(
        "--cache", action="store_true", help="only cache hits against uncached (bench/cache.py)"
    )
    parser.add_argument("--rounds", type=int, help="runs per figure (median taken)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run")
    parser.add_argument("--server", choices=sorted(_SERVERS), help="uvicorn loop and parser")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument(
        "--proposal",
        type=Path,
        action="append",
        default=[],
        help="also measure the proxy with this patch to lib/ applied (repeat: cumulatively)",
    )
    args = parser.parse_args(argv)
    if missing := missing_tools():
        print(
            f"bench: missing {', '.join(missing)}: apt-get install -y nginx-light wrk redis-server"
        )
        return 2
    options = Options(server=args.server or _default_server())
    if args.tiny:
        options = Options(
            rounds=1,
            duration_s=1,
            warmup=False,
            concurrencies=(1, 4),
            ttfb_samples=10,
            server=options.server,
            targets=list(TINY),
            cold_start_runs=0,
        )
    elif args.explore:
        options.targets = list(EXPLORE)
    elif args.limits:
        options.targets = [
            DIRECT,
            PROXY,
            PROXY_LIMITS,
            PROXY_LIMITS_NO_LEDGER,
            REFERENCE_AIOHTTP,
        ]
        options.concurrencies = (1, 16)
        options.cold_start_runs = 0
    elif args.transports:
        options.targets = [DIRECT, PROXY, PROXY_HTTPX, PROXY_AIOHTTP_POOL, REFERENCE_AIOHTTP]
        options.cold_start_runs = 0
    elif args.cache:
        options.targets = [DIRECT, PROXY, PROXY_CACHE, PROXY_CACHE_REDIS, REFERENCE_AIOHTTP]
        options.concurrencies = (1, 16)
        options.cold_start_runs = 0
    options.rounds = args.rounds or options.rounds
    options.duration_s = args.duration or options.duration_s
    started, load_before = time.monotonic(), os.getloadavg()[0]
    # A proposal is measured against the run's proxy as it is.
    base = next(target for target in options.targets if target.role == "proxy")
    with contextlib.ExitStack() as stack:
        for count in range(1, len(args.proposal) + 1):
            patched = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pg-")))
            _apply_proposals(args.proposal[:count], patched)
            name = "proxy + " + " + ".join(p.stem for p in args.proposal[:count])
            proposed = replace(base, name=name, role="variant", app_dir=patched)
            options.targets.insert(1 + count, proposed)
        if args.explore and args.proposal:
            for name, changes in _PROPOSAL_VARIANTS.items():
                options.targets.append(replace(proposed, name=name, **changes))
        report = run_suite(options)
    elapsed = time.monotonic() - started
    text = report + (
        f"\nWall time of this run: {elapsed:.0f} s. Load average (1 min) before the run: "
        f"{load_before:.1f} (other work on the machine; the further above 0, the noisier the "
        f"figures), after it: {os.getloadavg()[0]:.1f} (this run included).\n"
    )
    print(text)
    args.out.write_text(text)
    print(f"bench: wrote {args.out}")
    return 0


def _apply_proposals(diffs: list[Path], directory: Path) -> None:
    """A copy of lib/ in `directory` with the diffs' changes to lib/ applied in turn."""
    shutil.copytree(ROOT / "lib", directory / "lib")
    for diff in diffs:
        command = ["git", "apply", "-p1", "--include=lib/*", str(diff.resolve())]
        subprocess.run(command, cwd=directory, check=True)


def run_suite(options: Options) -> str:
    """Measure every target in `options` and return the results as Markdown."""
    with contextlib.ExitStack() as redis:
        if any(limits.needs_redis(target.env) for target in options.targets):
            redis_url = redis.enter_context(limits.redis_on_loopback())
            options.targets = [
                replace(t, env={**t.env, "REDIS_URL": redis_url})
                if limits.needs_redis(t.env)
                else t
                for t in options.targets
            ]
        return _measure_and_report(options)


def _measure_and_report(options: Options) -> str:
    # Before the load, so that nothing else runs beside the fresh processes.
    cold_ratio = (
        cold_start.first_chat_cpu_ratio(cold_start.measure(options.cold_start_runs))
        if options.cold_start_runs
        else None
    )
    with NginxUpstream() as upstream, tempfile.TemporaryDirectory() as scratch:
        scripts = {s.name: _write_wrk_script(Path(scratch), s) for s in SCENARIOS}
        with contextlib.ExitStack() as stack:
            running = [
                stack.enter_context(_serve(target, upstream, options.server))
                for target in options.targets
            ]
            for served in running:
                _check_answers(served)
            for served in running:
                for scenario in SCENARIOS:
                    if options.warmup:
                        _wrk(served, scenario, scripts[scenario.name], 16, 1)
            load = _measure_load(running, scripts, options)
            first_byte = _measure_first_byte(running, options)
            peak_rss = {served.target.name: served.peak_rss_mb() for served in running}
    held = _measure_holdback(options)
    report = _report(options, load, first_byte, peak_rss, held, _upstream_note(load))
    return report + _goals(options, load, cold_ratio)


@contextlib.contextmanager
def _serve(
    target: Target, upstream: NginxUpstream | holdback.Drip, default_server: str
) -> Iterator[Running]:
    if target.app is None:
        yield Running(target, upstream.port)
        return
    port = free_port()
    loop, parser = _SERVERS[target.server or default_server]
    command = [sys.executable, "-m", "uvicorn", target.app, "--app-dir", str(target.app_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--loop", loop, "--http", parser]
    command += ["--no-access-log", "--log-level", "warning", "--backlog", "2048"]
    command += ["--factory"] if target.factory else []
    # Only the settings given here: none of the developer's own (HF_TOKEN, CORS_ORIGINS, ...).
    inherited = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env = {
        **inherited,
        "HF_BASE_URL": upstream.url,
        "BENCH_UPSTREAM_URL": upstream.url,
        **target.env,
    }
    # cwd: so that no developer's .env is read. stderr: asyncio logs every write to a socket
    # that wrk has closed; keep that out of the table.
    with tempfile.TemporaryDirectory() as cwd, Path(cwd, "stderr.log").open("w+") as errors:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            try:
                wait_for_port(port, process)
            except RuntimeError as exc:
                errors.seek(0)
                raise RuntimeError(f"{target.name} did not start: {exc}\n{errors.read()}") from None
            yield Running(target, port, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _check_answers(served: Running) -> None:
    """Fail early unless the target answers each scenario as the upstream does."""
    for scenario in SCENARIOS:
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            connection.request("POST", scenario.path, json.dumps(scenario.body), _headers(scenario))
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200 or scenario.expect not in body:
            raise RuntimeError(
                f"{served.target.name} answered {scenario.name} with {response.status}: "
                f"{body[:200]!r}"
            )


def _headers(scenario: Scenario) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_KEY}"}
    if scenario.stream:
        headers["X-Request-ID"] = STREAM_REQUEST_ID
    return headers


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _write_wrk_script(directory: Path, scenario: Scenario) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{json.dumps(scenario.body)}]==]"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in _headers(scenario).items()]
    path = directory / f"{scenario.name.replace(' ', '_')}.lua"
    path.write_text("\n".join(lines) + "\n" + _WRK_DONE)
    return path


def _wrk(
    served: Running, scenario: Scenario, script: Path, clients: int, duration_s: int
) -> Measurement:
    url = f"http://127.0.0.1:{served.port}{scenario.path}"
    command = ["wrk", "-t1", f"-c{clients}", f"-d{duration_s}s", "--timeout", "10s", "-s"]
    result = subprocess.run([*command, str(script), url], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    requests, duration_us, errors, p50_us, p99_us = map(int, line.split()[1:])
    if errors or not requests:
        raise RuntimeError(f"{served.target.name} {scenario.name} c={clients}: {result.stdout}")
    return Measurement(requests / (duration_us / 1e6), p50_us / 1000, p99_us / 1000)


# (scenario, clients, target name) -> one Measurement per round
Load = dict[tuple[str, int, str], list[Measurement]]


def _measure_load(running: list[Running], scripts: dict[str, Path], options: Options) -> Load:
    load: Load = {}
    for _ in range(options.rounds):
        for clients in options.concurrencies:
            for scenario in SCENARIOS:
                for served in running:
                    measurement = _wrk(
                        served, scenario, scripts[scenario.name], clients, options.duration_s
                    )
                    key = (scenario.name, clients, served.target.name)
                    load.setdefault(key, []).append(measurement)
    return load


def _measure_first_byte(running: list[Running], options: Options) -> dict[str, list[float]]:
    """Per target, the median time to first streamed byte of each round, in ms."""
    stream = next(s for s in SCENARIOS if s.stream)
    headers = {k: v for k, v in _headers(stream).items() if k != "Content-Type"}
    request = ttfb.build_request(stream.path, json.dumps(stream.body).encode(), headers)
    medians: dict[str, list[float]] = {}
    for _ in range(options.rounds):
        for served in running:
            times = ttfb.probe(served.port, request, options.ttfb_samples)
            medians.setdefault(served.target.name, []).append(ttfb.median_ms(times))
    return medians


def _measure_holdback(options: Options) -> dict[str, tuple[int, float]]:
    """Per app, (events held back, largest delay in ms) relaying a stream that drips."""
    stream = next(s for s in SCENARIOS if s.stream)
    headers = {k: v for k, v in _headers(stream).items() if k != "Content-Type"}
    # A cached proxy must relay the drip, not answer from an entry the load phase kept (in the
    # run's shared Redis); the others ignore the header.
    headers["Cache-Control"] = "no-cache"
    request = ttfb.build_request(stream.path, json.dumps(stream.body).encode(), headers)
    results = {}
    with holdback.Drip() as drip:
        for target in options.targets:
            if target.app is not None:
                with _serve(target, drip, options.server) as served:
                    arrived = holdback.arrivals(served.port, request)
                    results[target.name] = holdback.held_back(drip.sent_at, arrived)
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _added(load: Load, key: tuple[str, int, str], attribute: str) -> float:
    """Median over rounds of (target - direct), pairing each round with its own direct run."""
    scenario, clients, _ = key
    direct = load[(scenario, clients, DIRECT.name)]
    return _median(
        [
            getattr(m, attribute) - getattr(d, attribute)
            for m, d in zip(load[key], direct, strict=True)
        ]
    )


def _upstream_note(load: Load) -> str:
    direct = min(_median([m.rps for m in v]) for k, v in load.items() if k[2] == DIRECT.name)
    apps = max(_median([m.rps for m in v]) for k, v in load.items() if k[2] != DIRECT.name)
    return (
        f"nginx is not the bottleneck: called directly it serves at least {direct:,.0f} req/s "
        f"in every cell, {direct / apps:.1f} times the fastest proxied figure ({apps:,.0f} req/s)."
    )


def _report(
    options: Options,
    load: Load,
    first_byte: dict[str, list[float]],
    peak_rss: dict[str, float | None],
    held: dict[str, tuple[int, float]],
    upstream_note: str,
) -> str:
    names = [t.name for t in options.targets]
    apps = [t for t in options.targets if t.app is not None]
    references = [t.name for t in options.targets if t.role == "reference"]
    lines = [
        "# promptgate benchmark",
        "",
        _machine(options),
        "",
        "Added = the target's figure minus calling nginx directly in the same round. "
        "vs floor = added p50 divided by the best reference forwarder's; "
        "vs best = req/s divided by the best reference forwarder's. Medians over rounds.",
        "",
        "| scenario | clients | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| added p50 vs floor | req/s vs best |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        for clients in options.concurrencies:
            cell = {n: load[(scenario.name, clients, n)] for n in names}
            floor = min(_added(load, (scenario.name, clients, n), "p50_ms") for n in references)
            best = max(_median([m.rps for m in cell[n]]) for n in references)
            for name in names:
                rps = _median([m.rps for m in cell[name]])
                row = [scenario.name, str(clients), name, f"{rps:,.0f}"]
                row += [
                    f"{_median([getattr(m, a) for m in cell[name]]):.2f}"
                    for a in ("p50_ms", "p99_ms")
                ]
                if name == DIRECT.name:
                    row += ["", "", "", ""]
                else:
                    added = _added(load, (scenario.name, clients, name), "p50_ms")
                    added99 = _added(load, (scenario.name, clients, name), "p99_ms")
                    row += [
                        f"{added:.2f}",
                        f"{added99:.2f}",
                        _ratio(added, floor),
                        f"{rps / best:.2f}",
                    ]
                lines.append("| " + " | ".join(row) + " |")
    direct_first = _median(first_byte[DIRECT.name])
    floor_first = min(_median(first_byte[n]) - direct_first for n in references)
    lines += [
        "",
        upstream_note,
        "",
        f"Time to first streamed byte, 1 client, median of {options.rounds} x "
        f"{options.ttfb_samples} samples (raw-socket probe, bench/ttfb.py). Held back: of "
        f"{holdback.EVENTS} events an upstream writes {holdback.GAP_S * 1000:g} ms apart, how "
        "many reached the client only after the next was written (bench/holdback.py); "
        "peak RSS: VmHWM of the server process over the whole run.",
        "",
        "| target | first byte ms | added ms | added vs floor | held back | max event delay ms "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| {DIRECT.name} | {direct_first:.3f} | | | | | |",
    ]
    for target in apps:
        first = _median(first_byte[target.name])
        late, delay_ms = held[target.name]
        lines.append(
            f"| {target.name} | {first:.3f} | {first - direct_first:.3f} | "
            f"{_ratio(first - direct_first, floor_first)} | {late} | {delay_ms:.2f} "
            f"| {peak_rss[target.name]:.1f} |"
        )
    lines += ["", *_targets(options, load, first_byte, held)]
    sections = (
        (limits.report, PROXY_LIMITS.name, PROXY.name),
        (limits.ledger_report, PROXY_LIMITS.name, PROXY_LIMITS_NO_LEDGER.name),
    )
    for section, on, off in sections:
        if on in names and off in names:
            cells = {
                scenario.name: {
                    (clients, name): (
                        [m.p50_ms for m in load[(scenario.name, clients, name)]],
                        [m.rps for m in load[(scenario.name, clients, name)]],
                    )
                    for clients in options.concurrencies
                    for name in (on, off)
                }
                for scenario in SCENARIOS
            }
            lines += ["", *section(cells, on, off, options.concurrencies)]
    if PROXY_CACHE.name in names and PROXY.name in names:
        compared = [DIRECT.name, PROXY.name, PROXY_CACHE.name]
        redis = PROXY_CACHE_REDIS.name if PROXY_CACHE_REDIS.name in names else None
        cells = {
            scenario.name: {
                (clients, name): (
                    [m.p50_ms for m in load[(scenario.name, clients, name)]],
                    [m.rps for m in load[(scenario.name, clients, name)]],
                )
                for clients in options.concurrencies
                for name in compared + ([redis] if redis else [])
            }
            for scenario in SCENARIOS
        }
        lines += [
            "",
            *cache.report(
                cells,
                direct=DIRECT.name,
                uncached=PROXY.name,
                memory=PROXY_CACHE.name,
                redis=redis,
                concurrencies=options.concurrencies,
            ),
        ]
    return "\n".join(lines) + "\n"


def _goals(options: Options, load: Load, cold_ratio: float | None) -> str:
    """Issue 20's table, when the run measured the proxy and the reference."""
    names = {t.name for t in options.targets}
    if not {PROXY.name, REFERENCE_AIOHTTP.name} <= names:
        return ""
    middle = options.concurrencies[1]  # 16 but in a --tiny run

    def rps(name: str) -> float:
        return _median([m.rps for m in load[("chat", middle, name)]])

    def added(name: str) -> float:
        return _added(load, ("chat", 1, name), "p50_ms")

    off, reference = PROXY.name, REFERENCE_AIOHTTP.name
    limited = PROXY_LIMITS.name in names
    rows = goals.figures(
        added_vs_reference=added(off) / added(reference),
        rps_vs_reference=rps(off) / rps(reference),
        limits_added_ms=added(PROXY_LIMITS.name) - added(off) if limited else None,
        limits_rps_ratio=rps(PROXY_LIMITS.name) / rps(off) if limited else None,
        cold_start_ratio=cold_ratio,
        default_transport_rps_vs_reference=rps(PROXY.name) / rps(reference),
    )
    return "\n" + "\n".join(goals.report(rows)) + "\n"


def _targets(
    options: Options,
    load: Load,
    first_byte: dict[str, list[float]],
    held: dict[str, tuple[int, float]],
) -> list[str]:
    """The issue's targets, checked for the proxy and any variant of it."""
    lowest, middle = options.concurrencies[0], options.concurrencies[1]
    references = [t.name for t in options.targets if t.role == "reference"]
    lines = [
        "Targets (issue 6): added p50 at 1 client <= 1.2 x floor; req/s at "
        f"{middle} clients >= 0.8 x best reference; first byte added <= 2 ms; no chunk "
        "held back.",
        "",
        "| target | scenario | p50 added vs floor (1 client) | req/s vs best "
        f"({middle} clients) | first byte added ms | chunks held back |",
        "|---|---|---:|---:|---:|---:|",
    ]
    direct_first = _median(first_byte[DIRECT.name])
    for target in options.targets:
        if target.role not in ("proxy", "variant"):
            continue
        first_added = _median(first_byte[target.name]) - direct_first
        for scenario in SCENARIOS:
            floor = min(_added(load, (scenario.name, lowest, n), "p50_ms") for n in references)
            added = _added(load, (scenario.name, lowest, target.name), "p50_ms")
            best = max(
                _median([m.rps for m in load[(scenario.name, middle, n)]]) for n in references
            )
            rps = _median([m.rps for m in load[(scenario.name, middle, target.name)]])
            verdicts = [
                _verdict(_ratio(added, floor), added <= 1.2 * floor),
                _verdict(f"{rps / best:.2f}", rps >= 0.8 * best),
                _verdict(f"{first_added:.3f}", first_added <= 2.0) if scenario.stream else "",
                _verdict(str(held[target.name][0]), not held[target.name][0])
                if scenario.stream
                else "",
            ]
            lines.append(f"| {target.name} | {scenario.name} | " + " | ".join(verdicts) + " |")
    return lines


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}" if floor > 0 else "n/a"


def _verdict(figure: str, met: bool) -> str:
    return f"{figure} {'met' if met else 'MISSED'}"


def _default_server() -> str:
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _machine(options: Options) -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = []
    for name in (
        "fastapi",
        "starlette",
        "pydantic",
        "httpx",
        "httpcore",
        "h11",
        "uvicorn",
        "uvloop",
        "httptools",
        "aiohttp",
        "httpx-aiohttp",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages.append(f"{name} {importlib.metadata.version(name)}")
    loop, parser = _SERVERS[options.server]
    nginx = subprocess.run([nginx_path() or "nginx", "-v"], capture_output=True, text=True)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return "\n".join(
        [
            f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- Machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}; {', '.join(packages)}",
            f"- {nginx.stderr.strip()} (1 worker); {wrk.stdout.splitlines()[0].split(' [')[0]} "
            "(1 thread)",
            f"- Servers: uvicorn, 1 process each, --loop {loop} --http {parser} unless the "
            f"target says otherwise; {options.rounds} rounds x {options.duration_s:g} s per "
            f"figure at {', '.join(map(str, options.concurrencies))} clients",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
