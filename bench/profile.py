"""Where the proxy's time goes under load: py-spy samples a uvicorn worker while wrk drives it.

    python -m bench.profile [--limits] [--scenario chat] [--clients 16] [--seconds 10]

It serves the proxy (its built-in transport, uvloop + httptools) against the bench's
nginx (and, with `--limits`, Redis on loopback), records with py-spy (`pip install py-spy`;
not a dependency of the suite), and prints the functions holding most samples, by own time
and by time including callees, grouped by module. The collapsed stacks are kept in
`--out` for a flame graph (`py-spy` writes them in the format flamegraph.pl and speedscope read).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import limits
from bench.run import PROXY, PROXY_LIMITS, SCENARIOS, _serve, _write_wrk_script, _wrk
from bench.upstream import NginxUpstream


def main(argv: list[str] | None = None) -> int:
    """Profile one scenario; print the top functions; 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--limits", action="store_true", help="count every call in Redis")
    parser.add_argument("--scenario", default="chat", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("/tmp/promptgate-profile.txt"))
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    target = PROXY_LIMITS if args.limits else PROXY
    with contextlib.ExitStack() as stack:
        if limits.needs_redis(target.env):
            url = stack.enter_context(limits.redis_on_loopback())
            target = type(target)(**{**target.__dict__, "env": {**target.env, "REDIS_URL": url}})
        upstream = stack.enter_context(NginxUpstream())
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        script = _write_wrk_script(scratch, scenario)
        served = stack.enter_context(_serve(target, upstream, "uvloop"))
        _wrk(served, scenario, script, args.clients, 2)  # warm up
        assert served.process is not None
        # --nonblocking: py-spy's default pauses the server for each sample, which slowed it
        # to a quarter of its speed and pushed Redis calls past their bound.
        record = [py_spy, "record", "--nonblocking", "--pid", str(served.process.pid)]
        record += ["--rate", "500"]
        record += ["--duration", str(args.seconds), "--format", "raw", "-o", str(args.out)]
        spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        measured = _wrk(served, scenario, script, args.clients, args.seconds)
        spy.wait()
    print(f"{target.name}, {scenario.name}, {args.clients} clients: {measured.rps:,.0f} req/s")
    _print_top(args.out, args.top)
    return 0


def _print_top(path: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
        modules[_module(frames[-1])] += weight
    for title, counter in (("own", own), ("with callees", total), ("own, by file", modules)):
        print(f"\n{title} (share of {samples} samples)")
        for frame, weight in counter.most_common(top):
            print(f"{100 * weight / samples:6.1f}%  {frame}")


def _module(frame: str) -> str:
    # py-spy frames read "function (path/file.py:line)".
    inside = frame.rpartition("(")[2].rstrip(")")
    path = inside.rpartition(":")[0]
    for marker in ("site-packages/", "lib/python3.12/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path or frame


if __name__ == "__main__":
    sys.exit(main())
