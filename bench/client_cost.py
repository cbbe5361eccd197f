"""CPU time per upstream call of each HTTP client, alone, against the nginx upstream.

The proxy spends most of its time being a client. This isolates that part: one process, one
event loop, `clients` tasks each POSTing in a loop, and the process's CPU time divided by the
number of requests. With `--profile`, the top functions of one client under cProfile.

    python -m bench.client_cost [--loop uvloop|asyncio] [--profile httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from collections.abc import Awaitable, Callable

import httpx

from bench.upstream import NginxUpstream

_BODY = b'{"model":"m","messages":[{"role":"user","content":"Say hello in five words."}]}'
_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer x"}
_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200)

Post = Callable[[], Awaitable[bytes]]


async def _httpx_client(url: str, transport: httpx.AsyncBaseTransport | None) -> tuple[Post, Post]:
    client = httpx.AsyncClient(transport=transport, limits=_LIMITS)

    async def post() -> bytes:
        # As the proxy does: build, send streamed, read, close.
        request = client.build_request("POST", url, content=_BODY, headers=_HEADERS)
        response = await client.send(request, stream=True)
        try:
            return await response.aread()
        finally:
            await response.aclose()

    return post, client.aclose


async def _make(name: str, url: str) -> tuple[Post, Post]:
    if name == "httpx":
        return await _httpx_client(url, None)
    if name == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return await _httpx_client(url, AiohttpTransport(limits=_LIMITS))
    if name == "httpx-aiohttp bare":
        # httpx's Request and Response over the transport, without AsyncClient.send (no
        # cookie jar, auth or redirect handling): what a proxy needs.
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=_LIMITS)
        extensions = {"timeout": httpx.Timeout(60.0).as_dict()}

        async def post_bare() -> bytes:
            request = httpx.Request("POST", url, content=_BODY, headers=_HEADERS)
            request.extensions = extensions
            response = await transport.handle_async_request(request)
            try:
                return await response.aread()
            finally:
                await response.aclose()

        return post_bare, transport.aclose
    if name == "httpx2":
        import httpx2

        client2 = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=200))

        async def post2() -> bytes:
            response = await client2.post(url, content=_BODY, headers=_HEADERS)
            return response.content

        return post2, client2.aclose
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))

    async def post_aiohttp() -> bytes:
        async with session.post(url, data=_BODY, headers=_HEADERS) as response:
            return await response.read()

    return post_aiohttp, session.close


async def measure(name: str, url: str, clients: int, requests: int) -> tuple[float, float]:
    """(CPU µs per request, requests per second) for `requests` calls over `clients` tasks."""
    post, close = await _make(name, url)
    await asyncio.gather(*(post() for _ in range(clients)))  # open the connections
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await post()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    return cpu / requests * 1e6, requests / wall


def main() -> None:
    """Print CPU µs per request and req/s for each client at 1, 16 and 64 concurrent tasks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", help="profile this client at 16 tasks instead")
    args = parser.parse_args()
    runner = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    with NginxUpstream() as upstream:
        url = upstream.url + "/v1/chat/completions"
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            runner(measure(args.profile, url, 16, args.requests))
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
            return
        print(f"loop: {args.loop}; {args.requests} POSTs per cell; CPU µs/request, req/s")
        for name in ("httpx", "httpx-aiohttp", "httpx-aiohttp bare", "httpx2", "aiohttp"):
            cells = []
            for clients in (1, 16, 64):
                cpu_us, rps = runner(measure(name, url, clients, args.requests))
                cells.append(f"c={clients}: {cpu_us:6.0f} µs {rps:7,.0f}/s")
            print(f"{name:18} " + "  ".join(cells))


if __name__ == "__main__":
    main()
