"""`make dev`: serve promptgate on loopback; offline against the stand-in when HF_TOKEN is unset."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

from pydantic import SecretStr

from lib.settings import Settings, SettingsError, load_settings

DEV_CLIENT_KEY = "promptgate-dev-key"


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
    if settings.hf_token is None:
        from lib.standin import STANDIN_TOKEN, StandinState, create_standin_app

        standin_socket = _bind("127.0.0.1", 0)
        standin_port = standin_socket.getsockname()[1]
        updates: dict = {
            "hf_token": SecretStr(STANDIN_TOKEN),
            "hf_base_url": f"http://127.0.0.1:{standin_port}",
        }
        notes.append(
            f"No HF_TOKEN set: answering from the offline stand-in upstream on port {standin_port}."
        )
        if settings.allowlist_defaulted:
            # The stand-in costs nothing: let every task route and model be tried offline.
            updates["allowed_models"] = ["*"]
            notes.append("No ALLOWED_MODELS set: the stand-in answers for any model.")
        if not settings.proxy_api_keys and not settings.allow_anonymous:
            updates["proxy_api_keys"] = [SecretStr(DEV_CLIENT_KEY)]
            notes.append(f"No PROXY_API_KEYS set: the client key is '{DEV_CLIENT_KEY}'.")
        settings = settings.model_copy(update=updates)
        standin = create_standin_app(StandinState(token_delay_s=0.05))
        config = uvicorn.Config(standin, log_level="warning", access_log=False)
        servers.append(uvicorn.Server(config).serve(sockets=[standin_socket]))
    else:
        notes.append(
            f"Forwarding to {settings.hf_base_url} with the HF_TOKEN from the environment."
        )
    app = create_app(settings)
    proxy_socket = _bind(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    servers.append(uvicorn.Server(config).serve(sockets=[proxy_socket]))
    _print_banner(host, port, notes)
    await asyncio.gather(*servers)


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
