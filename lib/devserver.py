"""`make dev`: serve promptgate on loopback; offline against the stand-in when HF_TOKEN is unset.

With `UPSTREAM_API=openai` and no token, a server named by `HF_BASE_URL` (a local Ollama) is
used as it is; left at the router's URL, the stand-in plays an OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import sys

from pydantic import SecretStr

from lib.settings import DEFAULT_HF_BASE_URL, Settings, SettingsError, load_settings

DEV_CLIENT_KEY = "promptgate-dev-key"
# Offline only, like the client key: reads /api/usage and the /usage page.
DEV_ADMIN_KEY = "promptgate-dev-admin"


def main() -> None:
    """Start the proxy (and, offline, the stand-in) and serve until interrupted."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"promptgate: {exc}") from None
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings, host, port))


async def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from lib.app import create_app

    servers = []
    notes = []
    openai = settings.upstream_api == "openai"
    if _needs_standin(settings):
        from lib.standin import STANDIN_TOKEN, StandinState, create_standin_app

        standin_socket = _bind("127.0.0.1", 0)
        standin_port = standin_socket.getsockname()[1]
        updates: dict = {"hf_base_url": f"http://127.0.0.1:{standin_port}"}
        if not openai:  # an OpenAI-compatible server may need no token: show that path
            updates["hf_token"] = SecretStr(STANDIN_TOKEN)
        kind = "an OpenAI-compatible model server" if openai else "the offline stand-in upstream"
        notes.append(f"No HF_TOKEN set: answering from {kind} on port {standin_port}.")
        if settings.allowlist_defaulted:
            # The stand-in costs nothing: let every task route and model be tried offline.
            updates["allowed_models"] = ["*"]
            notes.append("No ALLOWED_MODELS set: the stand-in answers for any model.")
        if not settings.proxy_api_keys and not settings.allow_anonymous:
            updates["proxy_api_keys"] = [SecretStr(DEV_CLIENT_KEY)]
            notes.append(f"No PROXY_API_KEYS set: the client key is '{DEV_CLIENT_KEY}'.")
        if not settings.admin_api_keys and not (settings.keys_file or settings.keys_toml):
            digest = hashlib.sha256(DEV_ADMIN_KEY.encode()).hexdigest()
            updates["admin_api_keys"] = [SecretStr(f"sha256:{digest}")]
            notes.append(f"No ADMIN_API_KEYS set: /usage takes the admin key '{DEV_ADMIN_KEY}'.")
        settings = settings.model_copy(update=updates)
        token = None if openai else STANDIN_TOKEN
        state = StandinState(token_delay_s=0.05, token=token, api=settings.upstream_api)
        standin = create_standin_app(state)
        config = uvicorn.Config(standin, log_level="warning", access_log=False)
        servers.append(uvicorn.Server(config).serve(sockets=[standin_socket]))
    else:
        with_token = "with the HF_TOKEN from the environment" if settings.hf_token else "no token"
        notes.append(
            f"Forwarding to {settings.hf_base_url} ({settings.upstream_api}), {with_token}."
        )
    app = create_app(settings)
    proxy_socket = _bind(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    servers.append(uvicorn.Server(config).serve(sockets=[proxy_socket]))
    _print_banner(host, port, notes)
    await asyncio.gather(*servers)


def _needs_standin(settings: Settings) -> bool:
    """No token and nothing else to forward to: the router needs a token, while an
    OpenAI-compatible server named in HF_BASE_URL (a local Ollama) may take none."""
    if settings.hf_token is not None:
        return False
    return settings.upstream_api == "hf-router" or settings.hf_base_url == DEFAULT_HF_BASE_URL


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise SystemExit(f"promptgate: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _print_banner(host: str, port: int, notes: list[str]) -> None:
    url = f"http://{host}:{port}"
    lines = [
        "",
        f"  promptgate is serving on {url}  (playground: {url}/, API docs: {url}/docs)",
        *[f"  {n}" for n in notes],
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
