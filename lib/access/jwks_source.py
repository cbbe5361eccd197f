"""Fetching an identity provider's public keys (JWKS): the one module of the access layer
that talks HTTP, so the only one that catches httpx's errors.

Every failure (unreachable, slow, not 200, too large, not a key set, a discovery document
for another issuer) becomes `IdentityProviderUnavailableError`, a 503 whose message says
what went wrong and where, never a 500 and never a pass.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from lib.errors import IdentityProviderUnavailableError
from lib.settings import is_https_or_loopback

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 512 * 1024  # key sets are a few KB
DEFAULT_TIMEOUT_S = 3.0
# After a failed fetch, callers are told to retry after this long, and no fetch runs sooner.
RETRY_AFTER_FAILURE_S = 10


class JwksSource:
    """Where an issuer's keys are: `jwks_url` if given, else its OpenID discovery document.

    Each `fetch` opens a fresh connection: it runs at most once a minute per instance, and a
    pooled client would be bound to one event loop.
    """

    def __init__(
        self, issuer: str, jwks_url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._timeout_s = timeout_s

    async def fetch(self) -> list[dict[str, Any]]:
        """The key set's keys (JWK objects), or `IdentityProviderUnavailableError`."""
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            if self._jwks_url is None:
                discovery_url = self._issuer.rstrip("/") + DISCOVERY_PATH
                document = await self._get_json(client, discovery_url, "discovery document")
                self._jwks_url = _jwks_uri_of(document, self._issuer)
            key_set = await self._get_json(client, self._jwks_url, "key set (JWKS)")
        keys = key_set.get("keys")
        if not isinstance(keys, list):
            raise IdentityProviderUnavailableError(
                f"The identity provider's key set at {_where(self._jwks_url)} holds no 'keys' "
                "list, so no token can be checked."
            )
        return [key for key in keys if isinstance(key, dict)]

    async def _get_json(self, client: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
        where = _where(url)
        try:
            async with asyncio.timeout(self._timeout_s):
                async with client.stream("GET", url, headers={"Accept": "application/json"}) as r:
                    if r.status_code != 200:
                        raise _unavailable(f"its {what} at {where} answered HTTP {r.status_code}")
                    body = bytearray()
                    async for part in r.aiter_bytes():
                        body += part
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise _unavailable(f"its {what} at {where} is larger than 512 KB")
        except TimeoutError as exc:
            raise _unavailable(
                f"its {what} at {where} did not answer within {self._timeout_s:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(
                f"its {what} at {where} could not be reached ({type(exc).__name__})"
            ) from exc
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise _unavailable(f"its {what} at {where} is not JSON") from exc
        if not isinstance(document, dict):
            raise _unavailable(f"its {what} at {where} is not a JSON object")
        return document


def _jwks_uri_of(document: dict[str, Any], issuer: str) -> str:
    if document.get("issuer") != issuer:
        raise _unavailable(
            "its discovery document names a different issuer than OIDC_ISSUER (check the "
            "trailing slash)"
        )
    uri = document.get("jwks_uri")
    if not isinstance(uri, str) or not is_https_or_loopback(uri):
        raise _unavailable("its discovery document has no usable https jwks_uri")
    return uri


def _where(url: str) -> str:
    """Scheme, host and path: never a query string or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _unavailable(reason: str) -> IdentityProviderUnavailableError:
    return IdentityProviderUnavailableError(
        f"Cannot check sign-in tokens: the identity provider's keys are unavailable ({reason}). "
        "Try again shortly.",
        headers={"Retry-After": str(RETRY_AFTER_FAILURE_S)},
    )
