"""Tokens through the app: minting, using, refusing, and each user's limits, on both stores.

Time moves with an injected clock. The identity-provider tests use the fake provider of
tests/identity_provider.py on loopback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from tests.conftest import (
    AUTH,
    CANARY_KEY,
    CANARY_TOKEN_SECRET,
    Clock,
    chat_completion,
    make_settings,
)
from tests.identity_provider import AUDIENCE, ProviderState, create_provider_app, new_key, sign
from tests.secret_audit import audited
from tests.servers import serve_on_loopback

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}
MODEL = "HuggingFaceTB/SmolLM3-3B"
OTHER_MODEL = "Qwen/Qwen3-4B"
SECRET = CANARY_TOKEN_SECRET
T0 = 1_800_000_000.0  # a minute's first second
KEY_SHA256 = hashlib.sha256(CANARY_KEY.encode()).hexdigest()
# The `key_hash` claim of the canary key's tokens, computed as the README says a backend does.
KEY_HASH = hashlib.sha256(KEY_SHA256.encode()).hexdigest()[:16]
ROTATED_KEY = "pg_test_canary_key_rotated"
RSA = new_key("rsa-1")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def policy(**fields: Any) -> str:
    """A policy file whose key `browser-app` is the canary key, holding `fields`."""
    lines = ["[keys.browser-app]", f'sha256 = "{KEY_SHA256}"']
    for name, value in fields.items():  # `expires` is a TOML datetime, written bare
        lines.append(f"{name} = {value if name == 'expires' else json.dumps(value)}")
    return "\n".join(lines) + "\n"


def app_client(
    upstream: respx.Router, clock: Clock, keys_toml: str | None = None, **settings: Any
) -> TestClient:
    values: dict[str, Any] = {
        "token_secret": SECRET,
        "allowed_models": f"{MODEL},{OTHER_MODEL}",
        "keys_toml": keys_toml if keys_toml is not None else policy(),
    }
    values.update(settings)
    app = create_app(
        make_settings(**values), transport=httpx.MockTransport(upstream.async_handler), clock=clock
    )
    return TestClient(audited(app), raise_server_exceptions=False)


def mint(client: TestClient, **ask: Any) -> dict[str, Any]:
    response = client.post("/v1/tokens", json={"user": "alice", **ask}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


def test_minted_token_answers_as_documented_and_calls_the_model(
    upstream: respx.Router, clock: Clock
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock) as client:
        response = client.post(
            "/v1/tokens",
            json={"user": "alice", "ttl_s": 600, "models": [MODEL], "rpm": 10},
            headers=AUTH,
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {
            "token",
            "token_type",
            "expires_at",
            "user",
            "models",
            "limits",
            "cache",
        }
        assert body["token_type"] == "bearer" and body["user"] == "alice"
        assert body["expires_at"] == int(T0) + 600 and body["models"] == [MODEL]
        assert body["limits"] == {"rpm": 10, "tpm": None, "daily_tokens": None}
        answer = client.post(CHAT, json=HELLO, headers=bearer(body["token"]))
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "Hi there!"
        assert "Authorization" not in str(upstream.calls.last.request.headers).split("Bearer")[1:]


def test_a_token_reaches_the_upstream_with_the_servers_token_not_its_own(
    upstream: respx.Router, clock: Clock
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock) as client:
        token = mint(client)["token"]
        client.post(CHAT, json=HELLO, headers=bearer(token))
    sent = route.calls.last.request.headers["authorization"]
    assert token not in sent and sent.startswith("Bearer hf_")


def test_minting_spends_none_of_the_keys_requests(upstream: respx.Router, clock: Clock) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock, policy(rpm=1)) as client:
        for user in ("a", "b", "c"):
            mint(client, user=user)
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200


def test_minting_with_a_token_is_403(upstream: respx.Router, clock: Clock) -> None:
    with app_client(upstream, clock) as client:
        token = mint(client)["token"]
        response = client.post("/v1/tokens", json={"user": "bob"}, headers=bearer(token))
    assert response.status_code == 403
    assert error_of(response)["code"] == "token_not_allowed"
    assert "client key" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("ask", "field"),
    [
        ({"rpm": 61}, "rpm"),
        ({"models": [OTHER_MODEL]}, "models"),
        ({"ttl_s": 3601}, "ttl_s"),
        ({"daily_tokens": 10**7}, "daily_tokens"),
    ],
)
def test_minting_beyond_the_keys_scope_is_400_naming_the_field(
    upstream: respx.Router, clock: Clock, ask: dict[str, Any], field: str
) -> None:
    keys = policy(rpm=60, models=[MODEL], daily_tokens=100000)
    with app_client(upstream, clock, keys) as client:
        response = client.post("/v1/tokens", json={"user": "alice", **ask}, headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["param"]) == ("token_scope_exceeded", field)


def test_minting_past_the_keys_expiry_is_400(upstream: respx.Router, clock: Clock) -> None:
    keys = policy(expires="2027-01-15T08:05:00Z")  # five minutes after T0
    with app_client(upstream, clock, keys) as client:
        response = client.post("/v1/tokens", json={"user": "a", "ttl_s": 600}, headers=AUTH)
        assert (response.status_code, error_of(response)["param"]) == (400, "ttl_s")
        assert mint(client)["expires_at"] == int(T0) + 300


@pytest.mark.parametrize("oidc", [False, True], ids=["no tokens", "identity provider only"])
def test_minting_without_token_secret_is_404_not_enabled_saying_how_to_turn_it_on(
    upstream: respx.Router, clock: Clock, oidc: bool
) -> None:
    settings: dict[str, Any] = {"token_secret": None}
    if oidc:
        settings.update(oidc_issuer="https://id.example.test", oidc_audience="app")
    with app_client(upstream, clock, **settings) as client:
        response = client.post("/v1/tokens", json={"user": "alice"}, headers=AUTH)
        stranger = client.post("/v1/tokens", json={"user": "alice"})
    assert response.status_code == 404  # a 503 would be retried by SDKs and load balancers
    assert error_of(response)["code"] == "not_enabled"
    assert (
        "set" in error_of(response)["message"] and "TOKEN_SECRET" in error_of(response)["message"]
    )
    assert stranger.status_code == 401  # a caller without a key learns nothing


def test_minting_needs_a_key(upstream: respx.Router, clock: Clock) -> None:
    with app_client(upstream, clock) as client:
        response = client.post("/v1/tokens", json={"user": "alice"})
    assert response.status_code == 401 and error_of(response)["code"] == "missing_api_key"


def test_anonymous_callers_cannot_mint(upstream: respx.Router, clock: Clock) -> None:
    with app_client(upstream, clock, allow_anonymous=True) as client:
        response = client.post("/v1/tokens", json={"user": "alice"})
    assert response.status_code == 403 and error_of(response)["code"] == "client_key_required"


def test_a_token_for_a_model_outside_its_scope_is_403(upstream: respx.Router, clock: Clock) -> None:
    with app_client(upstream, clock) as client:
        token = mint(client, models=[MODEL])["token"]
        response = client.post(CHAT, json={**HELLO, "model": OTHER_MODEL}, headers=bearer(token))
    assert response.status_code == 403
    assert error_of(response)["code"] == "model_not_allowed"
    assert "not allowed for this token" in error_of(response)["message"]


def test_an_expired_token_is_401_token_expired(upstream: respx.Router, clock: Clock) -> None:
    with app_client(upstream, clock) as client:
        token = mint(client, ttl_s=60)["token"]
        clock.now += 60 + 31
        response = client.post(CHAT, json=HELLO, headers=bearer(token))
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "token_expired" and token not in response.text


def test_a_tampered_token_is_401_invalid_token_without_echoing_it(
    upstream: respx.Router, clock: Clock
) -> None:
    with app_client(upstream, clock) as client:
        token = mint(client)["token"]
        header, claims, signature = token.split(".")
        forged = f"{header}.{claims[:-2]}xy.{signature}"
        response = client.post(CHAT, json=HELLO, headers=bearer(forged))
    assert response.status_code == 401 and error_of(response)["code"] == "invalid_token"
    assert forged not in response.text and forged not in response.headers.get("x-error-message")


def test_a_token_whose_key_was_removed_is_void(upstream: respx.Router, clock: Clock) -> None:
    with app_client(upstream, clock) as client:
        token = mint(client)["token"]
    other_keys = policy().replace("browser-app", "another-app")
    with app_client(upstream, clock, other_keys) as client:
        response = client.post(CHAT, json=HELLO, headers=bearer(token))
    assert response.status_code == 401
    assert "no longer configured" in error_of(response)["message"]


def test_a_token_whose_key_expired_is_void(upstream: respx.Router, clock: Clock) -> None:
    keys = policy(expires="2027-01-15T08:10:00Z")
    hand_made = {
        "iss": "promptgate", "aud": "promptgate", "sub": "alice", "key": "browser-app",
        "key_hash": KEY_HASH, "models": None, "rpm": None, "tpm": None, "daily_tokens": None,
        "iat": int(T0) + 500, "exp": int(T0) + 1100, "jti": "j1",
    }  # fmt: skip
    token = jwt.encode(hand_made, SECRET, algorithm="HS256")  # an app's backend minted it
    with app_client(upstream, clock, keys) as client:
        clock.now = T0 + 700
        response = client.post(CHAT, json=HELLO, headers=bearer(token))
    assert response.status_code == 401 and "has expired" in error_of(response)["message"]


def test_rotating_a_key_voids_every_token_it_minted_by_the_proxy_or_a_backend(
    upstream: respx.Router, clock: Clock
) -> None:
    hand_made = {
        "iss": "promptgate", "aud": "promptgate", "sub": "bob", "key": "browser-app",
        "key_hash": KEY_HASH, "models": None, "rpm": None, "tpm": None, "daily_tokens": None,
        "iat": int(T0), "exp": int(T0) + 600, "jti": "j2",
    }  # fmt: skip
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock) as client:
        minted = mint(client)["token"]
        assert client.post(CHAT, json=HELLO, headers=bearer(minted)).status_code == 200
    backend_minted = jwt.encode(hand_made, SECRET, algorithm="HS256")
    # The key leaked: the owner deploys [keys.browser-app] with a new key's sha256.
    rotated = policy().replace(KEY_SHA256, hashlib.sha256(ROTATED_KEY.encode()).hexdigest())
    with app_client(upstream, clock, rotated, proxy_api_keys="") as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 401  # the old key
        for token in (minted, backend_minted):
            refused = client.post(CHAT, json=HELLO, headers=bearer(token))
            assert refused.status_code == 401
            assert error_of(refused)["code"] == "invalid_token"
            assert "rotated" in error_of(refused)["message"]
        fresh = client.post("/v1/tokens", json={"user": "alice"}, headers=bearer(ROTATED_KEY))
        assert fresh.status_code == 200
        assert (
            client.post(CHAT, json=HELLO, headers=bearer(fresh.json()["token"])).status_code == 200
        )
    calls = len(upstream.calls)
    assert calls == 2  # the refused tokens reached nothing


def test_a_token_sent_where_tokens_are_off_is_401_saying_so(
    upstream: respx.Router, clock: Clock
) -> None:
    token = jwt.encode({"iss": "promptgate", "sub": "x"}, SECRET, algorithm="HS256")
    with app_client(upstream, clock, token_secret=None) as client:
        response = client.post(CHAT, json=HELLO, headers=bearer(token))
    assert response.status_code == 401
    assert "accepts no tokens" in error_of(response)["message"]


def test_each_user_has_their_own_minute_and_the_key_still_has_its_own(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock, policy(rpm=3), redis_url=store_url) as client:
        alice = bearer(mint(client, user="alice", rpm=2)["token"])
        bob = bearer(mint(client, user="bob", rpm=2)["token"])
        assert client.post(CHAT, json=HELLO, headers=alice).status_code == 200
        second = client.post(CHAT, json=HELLO, headers=alice)
        assert second.status_code == 200
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        refused = client.post(CHAT, json=HELLO, headers=alice)
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "rate_limit_exceeded"
        assert "user 'alice': 2 requests per minute" in error_of(refused)["message"]
        assert "retry-after" in refused.headers
        assert client.post(CHAT, json=HELLO, headers=bob).status_code == 200
        by_key = client.post(CHAT, json=HELLO, headers=bob)  # bob's 2nd, the key's 4th
        assert by_key.status_code == 429
        assert "key 'browser-app': 3 requests per minute" in error_of(by_key)["message"]
        clock.now += 60
        assert client.post(CHAT, json=HELLO, headers=alice).status_code == 200


def test_a_users_daily_tokens_run_out_without_stopping_other_users(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())  # 5 tokens each
    with app_client(upstream, clock, redis_url=store_url, global_daily_tokens=1000) as client:
        # Two requests' reserve fits (49 bytes / 4 = 13 tokens, 5 spent each), not a third's.
        alice = bearer(mint(client, user="alice", daily_tokens=18)["token"])
        bob = bearer(mint(client, user="bob")["token"])
        assert client.post(CHAT, json=HELLO, headers=alice).status_code == 200
        assert client.post(CHAT, json=HELLO, headers=alice).status_code == 200
        spent = client.post(CHAT, json=HELLO, headers=alice)
        assert spent.status_code == 429
        assert error_of(spent)["code"] == "insufficient_quota"
        assert spent.headers["x-should-retry"] == "false"
        message = error_of(spent)["message"]
        assert "User 'alice' cannot fit this request in its 18 tokens for today" in message
        assert client.post(CHAT, json=HELLO, headers=bob).status_code == 200
        limits = client.get("/api/limits", headers=AUTH).json()
        # The deployment's day counted each request once, not once per user and once per key.
        assert limits["remaining"]["deployment_tokens_today"] == 1000 - 15


def test_api_limits_shows_a_token_holder_their_own_limits(
    upstream: respx.Router, clock: Clock
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock, policy(rpm=60, daily_tokens=100000)) as client:
        alice = bearer(mint(client, user="alice", rpm=5)["token"])
        client.post(CHAT, json=HELLO, headers=alice)
        report = client.get("/api/limits", headers=alice).json()
    assert (report["key"], report["user"]) == ("browser-app", "alice")
    assert report["policy"]["rpm"] == 5 and report["policy"]["daily_tokens"] is None
    assert report["remaining"]["requests_this_minute"] == 4


def test_log_line_names_key_and_user_never_the_token(
    upstream: respx.Router, clock: Clock, log_lines: list[str]
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock) as client:
        token = mint(client)["token"]
        client.post(CHAT, json=HELLO, headers=bearer(token))
    minted, used = (json.loads(line) for line in log_lines if '"route":"/v1/' in line)
    assert (minted["route"], minted["key"], minted["user"]) == (
        "/v1/tokens",
        "browser-app",
        "alice",
    )
    assert (used["key"], used["user"]) == ("browser-app", "alice")
    assert not any(token in line for line in log_lines)
    assert not any(SECRET in line for line in log_lines)


def test_cors_preflight_from_an_allowed_origin_lets_a_token_through(
    upstream: respx.Router, clock: Clock
) -> None:
    origin = "http://127.0.0.1:5173"
    upstream.post(CHAT).respond(200, json=chat_completion())
    with app_client(upstream, clock, cors_origins=origin) as client:
        token = mint(client)["token"]
        preflight = client.options(
            CHAT,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        answer = client.post(CHAT, json=HELLO, headers={**bearer(token), "Origin": origin})
        assert answer.headers["access-control-allow-origin"] == origin
        assert "x-ratelimit-remaining-requests" in answer.headers["access-control-expose-headers"]
        elsewhere = client.options(
            CHAT,
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in elsewhere.headers


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[str, ProviderState]]:
    state = ProviderState(keys=[RSA])
    with serve_on_loopback(create_provider_app(state)) as url:
        yield url, state


def oidc_client(upstream: respx.Router, issuer: str, keys_toml: str) -> TestClient:
    import time

    settings = make_settings(
        token_secret=None, oidc_issuer=issuer, oidc_audience=AUDIENCE, keys_toml=keys_toml
    )
    app = create_app(
        settings, transport=httpx.MockTransport(upstream.async_handler), clock=time.time
    )
    return TestClient(audited(app), raise_server_exceptions=False)


def test_identity_provider_users_get_the_users_policy_each(
    upstream: respx.Router, provider: tuple[str, ProviderState]
) -> None:
    issuer, state = provider
    state.down = False
    upstream.post(CHAT).respond(200, json=chat_completion())
    keys = policy() + f'[users]\nrpm = 1\nmodels = ["{MODEL}"]\nmax_tokens = 50\n'
    with oidc_client(upstream, issuer, keys) as client:
        carol = bearer(sign(RSA, issuer, sub="google-oauth2|carol"))
        dave = bearer(sign(RSA, issuer, sub="auth0|dave"))
        assert client.post(CHAT, json=HELLO, headers=carol).status_code == 200
        assert json.loads(upstream.calls.last.request.content)["max_tokens"] == 50
        refused = client.post(CHAT, json=HELLO, headers=carol)
        assert refused.status_code == 429
        assert "user 'google-oauth2|carol': 1 requests per minute" in error_of(refused)["message"]
        assert client.post(CHAT, json=HELLO, headers=dave).status_code == 200
        erin = bearer(sign(RSA, issuer, sub="erin"))  # admitted first, then the model checked
        other_model = client.post(CHAT, json={**HELLO, "model": OTHER_MODEL}, headers=erin)
        assert other_model.status_code == 403


def test_identity_provider_down_is_503_in_the_error_shape(
    upstream: respx.Router, provider: tuple[str, ProviderState]
) -> None:
    issuer, state = provider
    state.down = True
    try:
        with oidc_client(upstream, issuer, policy()) as client:
            response = client.post(CHAT, json=HELLO, headers=bearer(sign(RSA, issuer)))
    finally:
        state.down = False
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "identity_provider_unavailable"
    assert "Try again shortly" in error["message"] and response.headers["retry-after"] == "10"
