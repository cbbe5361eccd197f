"""`import api.index`, what every cold start pays, loads no test, dev or docs-only module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CANARY_KEY, CANARY_TOKEN

REPO = Path(__file__).resolve().parent.parent

# Packages and modules the serverless entry must never load; each with why.
DENIED = {
    "pytest": "test framework",
    "_pytest": "test framework",
    "respx": "test mocking",
    "tests": "the test suite",
    "bench": "the benchmarks",
    "lib.standin": "the offline stand-in upstream and its APIs (tests and make dev)",
    "lib.devserver": "make dev",
    "uvicorn": "the dev and container server; Vercel brings its own, Lambda needs none",
    "openai": "a client the end-to-end tests drive",
    "huggingface_hub": "a client the end-to-end tests drive",
    "starlette.testclient": "test client",
    "fastapi.testclient": "test client",
    "playwright": "browser tests",
    "aiohttp": "the upstream transport: imported by the first upstream call, not the import",
    "httpx_aiohttp": "the upstream transport: imported by the first upstream call",
    "lib.upstream.http11": "the upstream transport: imported by the first upstream call",
    "lib.upstream.http11_wire": "the upstream transport's connections: the first upstream call",
    "httptools": "the upstream transport's parser: imported by the first upstream call",
    "h11": "httpx's pool's parser (UPSTREAM_TRANSPORT=httpx): imported by the first upstream call",
    "httpcore": "httpx's pool (UPSTREAM_TRANSPORT=httpx): imported by the first upstream call",
    "uvloop": "benchmark event loop",
    "fastapi_standalone_docs": "the docs page's assets, served as files, never imported",
    "mangum": "AWS Lambda only: the handler imports it on its first call",
    "redis": "not a dependency: the limit store speaks Redis's protocol itself (hiredis parses)",
    "lib.access.redis_store": "the shared limit store, only when one is configured",
    "lib.access.redis_connection": "the shared limit store's connection, only when configured",
    "hiredis": "the limit store's RESP parser: loaded with its connection, only when configured",
    "tomllib": "the policy file: read only when KEYS_FILE or KEYS_TOML is set",
    "jwt": "tokens: imported only when TOKEN_SECRET or OIDC_ISSUER is set",
    "cryptography": "identity-provider keys: loaded with jwt, only when tokens are configured",
    "lib.access.token_scope": "the tokens' narrowing rules: loaded by the first mint, or at "
    "start when TOKEN_SECRET or OIDC_ISSUER is set",
    # FastAPI imports OpenTelemetry's API (its native telemetry); the SDK is ours to load.
    "opentelemetry.sdk": "traces: the SDK, only when OTEL_EXPORTER_OTLP_ENDPOINT is set",
    "opentelemetry.exporter": "traces: the OTLP exporter, only when traces are configured",
    "google.protobuf": "traces' wire format: loaded with the OTLP exporter, only when configured",
    "requests": "the OTLP exporter's HTTP client, only when traces are configured",
    "lib.tracing": "traces: only when OTEL_EXPORTER_OTLP_ENDPOINT is set",
    "lib.access.response_cache": "the response cache: only when some caller's answers are cached",
    "lib.inference.chat_cache": "the response cache's chat: only when answers are cached",
    "lib.inference.embeddings_cache": "the response cache's embeddings: likewise",
    "lib.inference.responses_cache": "the response cache's Responses API: likewise",
    "lib.inference.cache_lookup": "the response cache's lookups: likewise",
    "lib.inference.cache_keys": "the response cache's canonical form: likewise",
    "lib.inference.cache_replay": "the response cache's replayed streams: likewise",
}
_CACHE_MODULES = [name for name in DENIED if "cache" in name]
# Not listed: click, pygments and rich. `import httpx` loads its CLI (httpx._main) and so
# whichever of them is installed; the dev venv has them, a deployed function has only click.

_LIST_MODULES = "import json, sys\nimport api.index\nprint(json.dumps(sorted(sys.modules)))"


def _entry_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "HF_TOKEN": CANARY_TOKEN,
        "PROXY_API_KEYS": CANARY_KEY,
    }


def _run_in_fresh_interpreter(code: str, tmp_path: Path) -> Any:
    """The JSON that `code` prints last, run by a new interpreter with the entry's settings."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_entry_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _modules_after_import(tmp_path: Path) -> set[str]:
    return set(_run_in_fresh_interpreter(_LIST_MODULES, tmp_path))


def test_import_api_index_loads_no_denied_module(tmp_path: Path) -> None:
    """The deny list is checked against a real import of the entry in a fresh interpreter."""
    modules = _modules_after_import(tmp_path)
    assert {"api.index", "lib.app", "fastapi"} <= modules  # the import really ran
    loaded = {
        name: why
        for name, why in DENIED.items()
        if name in modules or any(m.startswith(name + ".") for m in modules)
    }
    assert not loaded, f"import api.index loads: {loaded}"


_GC_AFTER_IMPORT = (
    "import gc, json\nimport api.index\n"
    "print(json.dumps([gc.isenabled(), gc.get_freeze_count(), len(gc.get_objects())]))"
)


def test_import_api_index_leaves_the_collector_on_and_the_build_frozen(tmp_path: Path) -> None:
    """The entry pauses garbage collection while it builds the app (a cold start's objects all
    live on), then freezes what it built and turns collection back on for everything after."""
    enabled, frozen, tracked = _run_in_fresh_interpreter(_GC_AFTER_IMPORT, tmp_path)
    assert enabled, "import api.index left garbage collection off"
    assert frozen > 10_000 and tracked < 1_000, (frozen, tracked)


_FIRST_CHAT = """
import asyncio, json, sys
import httpx
import api.index
from lib.app import create_app
from lib.settings import Settings

ANSWER = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
app = create_app(Settings(_env_file=None), transport=httpx.MockTransport(
    lambda request: httpx.Response(200, json=ANSWER)))

async def main():
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        headers = {"Authorization": "Bearer " + sys.argv[1]}
        reply = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert reply.status_code == 200, reply.text

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("cache_ttl_s", ["0", "60"])
def test_a_first_chat_loads_the_response_cache_only_where_answers_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_ttl_s: str
) -> None:
    script = tmp_path / "first_chat.py"
    script.write_text(_FIRST_CHAT)
    env = {**_entry_env(), "CACHE_TTL_S": cache_ttl_s, "HF_BASE_URL": "http://upstream.test"}
    done = subprocess.run(
        [sys.executable, str(script), CANARY_KEY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    loaded = {name for name in _CACHE_MODULES if name in modules}
    chat_only = set(_CACHE_MODULES) - {
        "lib.inference.embeddings_cache",
        "lib.inference.responses_cache",
    }
    assert loaded == (set() if cache_ttl_s == "0" else chat_only)
