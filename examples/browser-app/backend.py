"""The smallest backend a browser app needs in front of promptgate: sign a user in, mint a token.

It serves the page, "signs in" whoever gives a name (a stand-in: put your real login here),
and trades the proxy's client key, held only on this server, for a short-lived token naming
that user (`POST {PROXY_URL}/v1/tokens`). The page then calls the proxy directly with the
token; this backend never relays a prompt.

    PROXY_URL=https://your-proxy.example PROXY_CLIENT_KEY=pg_... python backend.py

Settings (environment): PROXY_URL, PROXY_CLIENT_KEY, and optionally TOKEN_TTL_S (600),
TOKEN_RPM and TOKEN_DAILY_TOKENS (each user's own limits), MODEL, PORT (8080).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class BackendConfig:
    """Where the proxy is, the client key this server holds, and what each user's token gets."""

    proxy_url: str
    client_key: str
    model: str = "HuggingFaceTB/SmolLM3-3B"
    ttl_s: int = 600
    rpm: int | None = None
    daily_tokens: int | None = None

    @classmethod
    def from_environment(cls) -> BackendConfig:
        """Read the settings above from the environment."""
        env = os.environ

        def number(name: str) -> int | None:
            return int(env[name]) if env.get(name) else None

        return cls(
            proxy_url=env["PROXY_URL"].rstrip("/"),
            client_key=env["PROXY_CLIENT_KEY"],
            model=env.get("MODEL", cls.model),
            ttl_s=number("TOKEN_TTL_S") or cls.ttl_s,
            rpm=number("TOKEN_RPM"),
            daily_tokens=number("TOKEN_DAILY_TOKENS"),
        )


def create_app(config: BackendConfig) -> Starlette:
    """The page, `GET /config` (what the page needs, no secret) and `POST /api/login`."""

    async def page(_: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def page_config(_: Request) -> JSONResponse:
        return JSONResponse({"proxyUrl": config.proxy_url, "model": config.model})

    async def login(request: Request) -> JSONResponse:
        body = await request.json()
        name = str(body.get("name", "")).strip()
        if not name:  # a stand-in login: a real app checks a password or a session here
            return JSONResponse({"error": {"message": "Enter a name to sign in."}}, 400)
        ask = {"user": name, "ttl_s": config.ttl_s, "models": [config.model]}
        ask |= {k: v for k, v in (("rpm", config.rpm), ("daily_tokens", config.daily_tokens)) if v}
        async with httpx.AsyncClient(timeout=10) as client:
            minted = await client.post(
                f"{config.proxy_url}/v1/tokens",
                json=ask,
                headers={"Authorization": f"Bearer {config.client_key}"},
            )
        # The proxy's answer (the token, or its error) goes to this user only.
        return JSONResponse(minted.json(), status_code=minted.status_code)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/config", page_config),
            Route("/api/login", login, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ]
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        create_app(BackendConfig.from_environment()), port=int(os.environ.get("PORT", "8080"))
    )
