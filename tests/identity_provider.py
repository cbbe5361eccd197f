"""A fake OpenID provider for tests: signing keys made at test time, and a Starlette app
serving its discovery document and key set (JWKS), to run on loopback with
`tests.servers.serve_on_loopback`. No private key is ever written to disk.

Faults are set on `ProviderState`: `down` (HTTP 500), `delay_s` (a slow answer).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

AUDIENCE = "pg-test-app"


@dataclass
class SigningKey:
    """A private key, its id and algorithm, and its public half as a JWK."""

    kid: str
    algorithm: str
    private: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        converter = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}
        jwk = converter[self.algorithm].to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}


def new_key(kid: str, algorithm: str = "RS256") -> SigningKey:
    """A fresh key pair for `algorithm` (RS256, ES256 or EdDSA)."""
    if algorithm == "RS256":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(kid=kid, algorithm=algorithm, private=private)


@dataclass
class ProviderState:
    """What the provider publishes and how it misbehaves; counts the key-set requests."""

    keys: list[SigningKey] = field(default_factory=list)
    down: bool = False
    delay_s: float = 0.0
    jwks_requests: int = 0
    issuer_override: str | None = None


def sign(
    key: SigningKey,
    issuer: str,
    *,
    sub: str = "user-42",
    audience: str = AUDIENCE,
    lifetime_s: int = 300,
    now: float | None = None,
    **extra: Any,
) -> str:
    """An ID token from this provider, as a sign-in SDK would receive it."""
    now = time.time() if now is None else now
    claims = {"iss": issuer, "aud": audience, "sub": sub, "iat": int(now)}
    claims["exp"] = int(now) + lifetime_s
    claims.update(extra)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})


def create_provider_app(state: ProviderState) -> Starlette:
    """`/.well-known/openid-configuration` and `/jwks.json`, issuer = the server's own URL."""

    async def discovery(request: Request) -> JSONResponse:
        issuer = state.issuer_override or str(request.base_url).rstrip("/")
        return JSONResponse({"issuer": issuer, "jwks_uri": f"{issuer}/jwks.json"})

    async def jwks(_: Request) -> JSONResponse:
        state.jwks_requests += 1
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.down:
            return JSONResponse({"error": "down"}, status_code=500)
        return JSONResponse({"keys": [key.public_jwk for key in state.keys]})

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks.json", jwks),
        ]
    )
