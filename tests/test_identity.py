"""Identity-provider tokens, against a fake OpenID provider serving its key set on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from lib.access.identity import OidcVerifier, SignedInUser
from lib.access.jwks_source import JwksSource
from lib.errors import (
    IdentityProviderUnavailableError,
    TokenExpiredError,
    TokenRejectedError,
)
from tests.conftest import Clock
from tests.identity_provider import (
    AUDIENCE,
    ProviderState,
    SigningKey,
    create_provider_app,
    new_key,
    sign,
)
from tests.servers import serve_on_loopback

RSA_KEY = new_key("rsa-1", "RS256")
EC_KEY = new_key("ec-1", "ES256")
ED_KEY = new_key("ed-1", "EdDSA")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, ProviderState]]:
    state = ProviderState()
    with serve_on_loopback(create_provider_app(state)) as url:
        yield url, state


@pytest.fixture
def provider(served: tuple[str, ProviderState]) -> ProviderState:
    _, state = served
    state.keys, state.down, state.delay_s, state.jwks_requests = (
        [RSA_KEY, EC_KEY, ED_KEY],
        False,
        0,
        0,
    )
    state.issuer_override = None
    return state


@pytest.fixture
def issuer(served: tuple[str, ProviderState]) -> str:
    return served[0]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _verifier(issuer: str, clock: Clock, jwks_url: str | None = None, timeout_s: float = 2.0):
    source = JwksSource(issuer, jwks_url, timeout_s=timeout_s)
    return OidcVerifier(issuer, AUDIENCE, source, clock=clock)


def _verify(verifier: OidcVerifier, token: str) -> SignedInUser:
    return asyncio.run(verifier.verify(token))


def _rejected(verifier: OidcVerifier, token: str) -> TokenRejectedError:
    with pytest.raises(TokenRejectedError) as caught:
        _verify(verifier, token)
    assert caught.value.status_code == 401 and token not in caught.value.message
    return caught.value


def _unavailable(verifier: OidcVerifier, token: str) -> IdentityProviderUnavailableError:
    with pytest.raises(IdentityProviderUnavailableError) as caught:
        _verify(verifier, token)
    error = caught.value
    assert (error.status_code, error.code) == (503, "identity_provider_unavailable")
    assert token not in error.message
    return error


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY, ED_KEY], ids=["RS256", "ES256", "EdDSA"])
def test_token_signed_by_the_providers_key_is_accepted(
    provider: ProviderState, issuer: str, clock: Clock, key: SigningKey
) -> None:
    user = _verify(_verifier(issuer, clock), sign(key, issuer, sub="auth0|abc"))
    assert user.user == "auth0|abc"


def test_key_set_is_found_through_discovery_and_fetched_once(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    verifier = _verifier(issuer, clock)
    for sub in ("a", "b", "c"):
        assert _verify(verifier, sign(RSA_KEY, issuer, sub=sub)).user == sub
    assert provider.jwks_requests == 1


def test_concurrent_first_requests_share_one_fetch(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    verifier = _verifier(issuer, clock)
    provider.delay_s = 0.2
    tokens = [sign(RSA_KEY, issuer, sub=f"u{i}") for i in range(20)]

    async def all_at_once() -> list[SignedInUser]:
        return await asyncio.gather(*(verifier.verify(t) for t in tokens))

    assert len(asyncio.run(all_at_once())) == 20
    assert provider.jwks_requests == 1


def test_alg_none_token_is_401_without_fetching_keys(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    body = _b64(json.dumps({"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": 2**31}).encode())
    error = _rejected(_verifier(issuer, clock), f"{header}.{body}.")
    assert error.code == "invalid_token" and "algorithm (alg)" in error.message
    assert provider.jwks_requests == 0


def test_hs256_token_signed_with_the_providers_rsa_public_key_is_401(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    """Algorithm confusion: the 'secret' is the public key anyone can download."""
    verifier = _verifier(issuer, clock)
    _verify(verifier, sign(RSA_KEY, issuer))  # the key set is loaded
    public_pem = RSA_KEY.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": issuer, "aud": AUDIENCE, "sub": "admin", "exp": int(time.time()) + 300}
    for secret in (public_pem, json.dumps(RSA_KEY.public_jwk).encode()):
        token = _hs256(secret, {"alg": "HS256", "kid": "rsa-1"}, claims)
        error = _rejected(verifier, token)
        assert "accepted: RS256, ES256, EdDSA" in error.message


def test_token_whose_alg_is_not_its_keys_is_401(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    """An ES256 signature presented under the RSA key's kid."""
    token = jwt.encode(
        {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 300},
        EC_KEY.private,
        algorithm="ES256",
        headers={"kid": "rsa-1"},
    )
    assert _rejected(_verifier(issuer, clock), token).code == "invalid_token"


def test_token_signed_by_another_key_under_a_known_kid_is_401(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    impostor = new_key("rsa-1", "RS256")
    error = _rejected(_verifier(issuer, clock), sign(impostor, issuer))
    assert error.message == "The token's signature does not verify."


def test_token_with_a_tampered_claim_is_401(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    header, _, signature = sign(RSA_KEY, issuer, sub="alice").split(".")
    forged = {"iss": issuer, "aud": AUDIENCE, "sub": "bob", "exp": int(time.time()) + 300}
    token = f"{header}.{_b64(json.dumps(forged).encode())}.{signature}"
    assert "signature" in _rejected(_verifier(issuer, clock), token).message


@pytest.mark.parametrize(
    ("field", "words"), [("issuer", "issuer (iss)"), ("audience", "audience (aud)")]
)
def test_token_for_another_issuer_or_audience_is_401(
    provider: ProviderState, issuer: str, clock: Clock, field: str, words: str
) -> None:
    if field == "issuer":
        token = sign(RSA_KEY, "https://other-issuer.test")
    else:
        token = sign(RSA_KEY, issuer, audience="some-other-app")
    assert words in _rejected(_verifier(issuer, clock), token).message


def test_expired_token_is_401_token_expired(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    token = sign(RSA_KEY, issuer, now=time.time() - 3600, lifetime_s=600)
    with pytest.raises(TokenExpiredError) as caught:
        _verify(_verifier(issuer, clock), token)
    assert caught.value.code == "token_expired"


@pytest.mark.parametrize(("claim", "words"), [("nbf", "not valid yet"), ("iat", "future (iat)")])
def test_token_from_the_future_beyond_the_leeway_is_401(
    provider: ProviderState, issuer: str, clock: Clock, claim: str, words: str
) -> None:
    later = int(time.time()) + 300
    token = sign(RSA_KEY, issuer, lifetime_s=3600, **{claim: later})
    assert words in _rejected(_verifier(issuer, clock), token).message


def test_token_without_a_subject_is_401(provider: ProviderState, issuer: str, clock: Clock) -> None:
    token = sign(RSA_KEY, issuer, sub=None)
    assert "'sub'" in _rejected(_verifier(issuer, clock), token).message


def test_token_without_a_kid_is_401(provider: ProviderState, issuer: str, clock: Clock) -> None:
    token = jwt.encode(
        {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 300},
        RSA_KEY.private,
        algorithm="RS256",
    )
    assert "(kid)" in _rejected(_verifier(issuer, clock), token).message


def test_unknown_kid_is_401_and_refetches_at_most_once_a_minute(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    verifier = _verifier(issuer, clock)
    rotated = new_key("rsa-2", "RS256")
    token = sign(rotated, issuer)

    error = _rejected(verifier, token)
    assert (
        error.message == "The token's signing key (kid) is not in the identity provider's key set."
    )
    assert provider.jwks_requests == 1
    for _ in range(5):
        _rejected(verifier, token)
    assert provider.jwks_requests == 1  # a stream of unknown kids does not hammer the provider

    provider.keys.append(rotated)  # the provider rotates its keys
    clock.offset = 59
    _rejected(verifier, token)
    assert provider.jwks_requests == 1
    clock.offset = 61
    assert _verify(verifier, sign(rotated, issuer)).user == "user-42"
    assert provider.jwks_requests == 2


def test_key_set_that_answers_500_gives_503_not_a_pass(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    provider.down = True
    error = _unavailable(_verifier(issuer, clock), sign(RSA_KEY, issuer))
    assert "answered HTTP 500" in error.message and "/jwks.json" in error.message
    assert error.headers == {"Retry-After": "10"}


def test_unreachable_key_set_gives_503(provider: ProviderState, clock: Clock) -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    error = _unavailable(_verifier(dead, clock), sign(RSA_KEY, dead))
    assert "could not be reached (ConnectError)" in error.message


def test_slow_key_set_gives_503_within_the_bound(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    provider.delay_s = 3.0
    verifier = _verifier(issuer, clock, jwks_url=f"{issuer}/jwks.json", timeout_s=0.5)
    started = time.monotonic()
    error = _unavailable(verifier, sign(RSA_KEY, issuer))
    assert time.monotonic() - started < 1.5
    assert "did not answer within 0.5 s" in error.message


def test_after_a_failed_fetch_requests_fail_fast_then_recover(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    verifier = _verifier(issuer, clock)
    token = sign(RSA_KEY, issuer)
    provider.down = True
    _unavailable(verifier, token)
    provider.down = False
    _unavailable(verifier, token)  # within 10 s of the failure: no new fetch
    assert provider.jwks_requests == 1
    clock.offset = 11
    assert _verify(verifier, token).user == "user-42"
    assert provider.jwks_requests == 2


def test_cached_keys_keep_serving_when_a_refresh_fails(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    verifier = _verifier(issuer, clock)
    _verify(verifier, sign(RSA_KEY, issuer))
    provider.down = True
    clock.offset = 3601  # the key set is stale: refreshed on use, and the refresh fails
    assert _verify(verifier, sign(RSA_KEY, issuer, now=clock())).user == "user-42"
    assert provider.jwks_requests == 2


def test_discovery_naming_another_issuer_gives_503(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    provider.issuer_override = "https://evil.test"
    error = _unavailable(_verifier(issuer, clock), sign(RSA_KEY, issuer))
    assert "different issuer than OIDC_ISSUER" in error.message


def test_oversized_token_is_401_without_fetching(
    provider: ProviderState, issuer: str, clock: Clock
) -> None:
    token = sign(RSA_KEY, issuer, padding="x" * 9000)
    assert "longer than 8192 characters" in _rejected(_verifier(issuer, clock), token).message
    assert provider.jwks_requests == 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"
