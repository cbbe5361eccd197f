"""The proxy's own tokens: minted, verified, and every forgery the issue lists refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lib.access.bearer import MAX_TOKEN_CHARS, looks_like_jwt, read_unverified
from lib.access.token_scope import ParentKey, TokenAsk, grant_token
from lib.access.tokens import CLAIMS, ProxyTokens
from lib.errors import TokenExpiredError, TokenRejectedError
from tests.conftest import Clock

SECRET = "pg_test_canary_token_secret_0123456789abcdef"
PREVIOUS = "pg_test_canary_token_secret_previous_fedcba98"
NOW = 1_900_000_000.0
MODEL = "HuggingFaceTB/SmolLM3-3B"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A compact JWS built by hand, as an attacker would: HS256 over `hmac_key`, or unsigned."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


KEY_HASH = "0123456789abcdef"


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims of a proxy token issued at NOW, with `overrides` (None removes a claim)."""
    values: dict[str, Any] = {
        "iss": "promptgate",
        "aud": "promptgate",
        "sub": "user-1",
        "key": "mobile-app",
        "key_hash": KEY_HASH,
        "models": [MODEL],
        "rpm": 10,
        "tpm": 2000,
        "daily_tokens": 20000,
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "jti-1",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def tokens(clock: Clock) -> ProxyTokens:
    return ProxyTokens(SECRET, previous_secret=PREVIOUS, max_ttl_s=3600, clock=clock)


def _rejected(tokens: ProxyTokens, token: str) -> TokenRejectedError:
    with pytest.raises(TokenRejectedError) as caught:
        tokens.verify(token)
    error = caught.value
    assert error.status_code == 401
    assert token not in error.message and SECRET not in error.message
    return error


def test_minted_token_verifies_and_carries_exactly_the_documented_claims(
    tokens: ProxyTokens,
) -> None:
    parent = ParentKey(name="mobile-app", models=(MODEL,), rpm=60, tpm=40000, key_hash=KEY_HASH)
    ask = TokenAsk(user="user-1", ttl_s=600, rpm=10)
    grant = grant_token(ask, parent, allowed_models=[MODEL], max_ttl_s=3600, now=NOW)
    token = tokens.mint(grant)

    assert looks_like_jwt(token)
    unverified = read_unverified(token)
    assert unverified is not None
    assert unverified.header == {"alg": "HS256", "typ": "JWT"}
    assert set(unverified.claims) == set(CLAIMS)
    assert unverified.claims["exp"] - unverified.claims["iat"] == 600
    assert unverified.claims["tpm"] is None  # not asked for: not applied for the user
    assert tokens.verify(token) == grant


def test_a_token_minted_without_the_cache_carries_cache_false_and_verifies_so(
    tokens: ProxyTokens,
) -> None:
    parent = ParentKey(name="mobile-app", models=(MODEL,), key_hash=KEY_HASH)
    ask = TokenAsk(user="user-1", cache=False)
    grant = grant_token(ask, parent, allowed_models=[MODEL], max_ttl_s=3600, now=NOW)
    token = tokens.mint(grant)
    unverified = read_unverified(token)
    assert unverified is not None and unverified.claims["cache"] is False
    assert tokens.verify(token).cache is False
    # Without the claim (every token minted before it existed), the cache is allowed.
    assert tokens.verify(jwt.encode(claims(), SECRET, algorithm="HS256")).cache is True


def test_token_minted_by_an_apps_own_backend_with_pyjwt_verifies(tokens: ProxyTokens) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    grant = tokens.verify(token)
    assert (grant.user, grant.key, grant.models, grant.rpm) == (
        "user-1",
        "mobile-app",
        (MODEL,),
        10,
    )


def test_token_without_models_or_limits_leaves_them_to_the_parent_key(tokens: ProxyTokens) -> None:
    token = jwt.encode(
        claims(models=None, rpm=None, tpm=None, daily_tokens=None), SECRET, algorithm="HS256"
    )
    grant = tokens.verify(token)
    assert grant.models is None and grant.limits == {"rpm": None, "tpm": None, "daily_tokens": None}


@pytest.mark.parametrize(
    "key_hash", [None, "", "0123456789ABCDEF", "0123456789abcde", 12345678, "g" * 16]
)
def test_token_without_a_well_formed_key_hash_is_refused_naming_the_claim(
    tokens: ProxyTokens, key_hash: Any
) -> None:
    token = jwt.encode(claims(key_hash=key_hash), SECRET, algorithm="HS256")
    error = _rejected(tokens, token)
    assert error.code == "invalid_token"
    assert "key_hash" in error.message


def test_alg_none_token_is_401_invalid_token(tokens: ProxyTokens) -> None:
    token = forge({"alg": "none", "typ": "JWT"}, claims(), None)
    error = _rejected(tokens, token)
    assert error.code == "invalid_token"
    assert "algorithm (alg)" in error.message


def test_hs256_token_signed_with_an_rsa_public_key_is_401_invalid_token(
    tokens: ProxyTokens,
) -> None:
    public_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), public_pem)
    error = _rejected(tokens, token)
    assert (error.code, error.message) == (
        "invalid_token",
        "The token's signature does not verify.",
    )


def test_token_signed_with_a_wrong_secret_is_401_invalid_token(tokens: ProxyTokens) -> None:
    token = jwt.encode(claims(), "pg_test_canary_some_other_secret_0123456789", algorithm="HS256")
    assert "signature" in _rejected(tokens, token).message


def test_token_with_a_tampered_claim_is_401_invalid_token(tokens: ProxyTokens) -> None:
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    raised = _b64(json.dumps(claims(rpm=100000)).encode())
    error = _rejected(tokens, f"{header}.{raised}.{signature}")
    assert "signature" in error.message


def test_token_signed_with_the_previous_secret_still_verifies(tokens: ProxyTokens) -> None:
    assert tokens.verify(jwt.encode(claims(), PREVIOUS, algorithm="HS256")).user == "user-1"


def test_tokens_mint_with_the_current_secret_only(tokens: ProxyTokens, clock: Clock) -> None:
    grant = grant_token(
        TokenAsk(user="u"),
        ParentKey("k", key_hash=KEY_HASH),
        allowed_models=[MODEL],
        max_ttl_s=60,
        now=NOW,
    )
    token = tokens.mint(grant)
    after_rotation = ProxyTokens(SECRET, max_ttl_s=3600, clock=clock)
    assert after_rotation.verify(token).user == "u"
    only_old = ProxyTokens(PREVIOUS, max_ttl_s=3600, clock=clock)
    assert "signature" in _rejected(only_old, token).message


def test_expired_token_is_401_token_expired_naming_when(tokens: ProxyTokens, clock: Clock) -> None:
    token = jwt.encode(claims(exp=int(NOW) + 600), SECRET, algorithm="HS256")
    clock.now = NOW + 600 + 31
    error = _rejected(tokens, token)
    assert isinstance(error, TokenExpiredError)
    assert error.code == "token_expired"
    assert "expired at 2030-03-17T17:56:40Z (exp)" in error.message


def test_token_just_past_exp_is_accepted_within_the_leeway(
    tokens: ProxyTokens, clock: Clock
) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    clock.now = NOW + 600 + 20
    assert tokens.verify(token).user == "user-1"


def test_not_yet_valid_token_is_401_invalid_token(tokens: ProxyTokens) -> None:
    token = jwt.encode(claims(nbf=int(NOW) + 120), SECRET, algorithm="HS256")
    error = _rejected(tokens, token)
    assert (error.code, "nbf" in error.message) == ("invalid_token", True)


def test_token_issued_in_the_future_beyond_the_leeway_is_401(tokens: ProxyTokens) -> None:
    token = jwt.encode(claims(iat=int(NOW) + 120, exp=int(NOW) + 600), SECRET, algorithm="HS256")
    assert "issued in the future (iat)" in _rejected(tokens, token).message
    within = jwt.encode(claims(iat=int(NOW) + 10), SECRET, algorithm="HS256")
    assert tokens.verify(within).user == "user-1"


@pytest.mark.parametrize(
    ("claim", "value", "words"),
    [("iss", "someone-else", "issuer (iss)"), ("aud", "another-proxy", "audience (aud)")],
)
def test_token_for_another_issuer_or_audience_is_401(
    tokens: ProxyTokens, claim: str, value: str, words: str
) -> None:
    token = jwt.encode(claims(**{claim: value}), SECRET, algorithm="HS256")
    assert words in _rejected(tokens, token).message


def test_token_living_longer_than_token_max_ttl_is_401(tokens: ProxyTokens) -> None:
    token = jwt.encode(claims(exp=int(NOW) + 7200), SECRET, algorithm="HS256")
    assert "TOKEN_MAX_TTL_S = 3600 s" in _rejected(tokens, token).message


def test_oversized_token_is_401_before_any_parsing(tokens: ProxyTokens) -> None:
    token = jwt.encode(claims(padding="x" * MAX_TOKEN_CHARS), SECRET, algorithm="HS256")
    error = _rejected(tokens, token)
    assert f"longer than {MAX_TOKEN_CHARS} characters" in error.message


@pytest.mark.parametrize("missing", ["sub", "key", "exp", "iat", "jti"])
def test_token_missing_a_required_claim_is_401_naming_it(tokens: ProxyTokens, missing: str) -> None:
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm="HS256")
    assert f"'{missing}'" in _rejected(tokens, token).message


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("rpm", "10"),
        ("rpm", 0),
        ("tpm", True),
        ("models", "org/m"),
        ("models", ["../etc"]),
        ("sub", "a\nb"),
        ("exp", "soon"),
        ("cache", "no"),
    ],
)
def test_token_with_a_claim_of_the_wrong_type_is_401(
    tokens: ProxyTokens, claim: str, value: Any
) -> None:
    token = jwt.encode(claims(**{claim: value}), SECRET, algorithm="HS256")
    assert f"({claim})" in (message := _rejected(tokens, token).message) or f"'{claim}'" in message


@pytest.mark.parametrize("value", ["not a token", "eyJ.eyJ.", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_malformed_bearer_is_401_invalid_token(tokens: ProxyTokens, value: str) -> None:
    assert _rejected(tokens, value).code == "invalid_token"


def test_short_secret_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"32\+ characters"):
        ProxyTokens("pg_test_canary_short")
