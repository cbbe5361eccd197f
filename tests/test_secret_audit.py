"""The suite-wide leak watch itself: it must see a canary wherever one turns up."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tests.conftest import CANARY_TOKEN
from tests.secret_audit import AUDIT, audited

LEAK = "hf_test_canary_planted_on_purpose"


async def _leaky_app(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"x-debug", LEAK.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    half = len(LEAK) // 2
    await send({"type": "http.response.body", "body": LEAK[:half].encode(), "more_body": True})
    await send({"type": "http.response.body", "body": LEAK[half:].encode()})


def test_audit_sees_canaries_in_headers_split_bodies_and_log_lines() -> None:
    before = len(AUDIT.hits)
    try:
        TestClient(audited(_leaky_app)).get("/leak")
        logging.getLogger("promptgate").warning("token was %s", LEAK)
        hits = AUDIT.hits[before:]
        assert any(h.startswith("GET /leak headers") for h in hits)
        assert any(h.startswith("GET /leak body") for h in hits)
        assert any(h.startswith("log promptgate") for h in hits)
    finally:
        del AUDIT.hits[before:]  # planted on purpose: not a leak of the proxy's


def test_audit_sees_a_piece_of_a_watched_secret() -> None:
    before = len(AUDIT.hits)
    try:
        AUDIT.scan("planted", b"... auth failed for " + CANARY_TOKEN[3:17].encode() + b" ...")
        assert any("a piece of a secret" in hit for hit in AUDIT.hits[before:])
        AUDIT.scan("planted", b"... " + CANARY_TOKEN[3:14].encode() + b" ...")  # 11 characters
        assert len(AUDIT.hits) == before + 1
    finally:
        del AUDIT.hits[before:]  # planted on purpose: not a leak of the proxy's


async def _minting_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = b'{"token": "eyJhbGciOiJIUzI1NiJ9.e30.planted-minted-token", "token_type": "bearer"}'
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_audit_watches_every_minted_token_in_log_lines() -> None:
    before = len(AUDIT.hits)
    try:
        TestClient(audited(_minting_app)).post("/v1/tokens")
        assert AUDIT.hits[before:] == []  # the answer to its minting may hold it
        logging.getLogger("promptgate").warning(
            "bearer eyJhbGciOiJIUzI1NiJ9.e30.planted-minted-token"
        )
        hits = AUDIT.hits[before:]
        assert hits == ["log promptgate: a minted token ending ...-token"]
    finally:
        del AUDIT.hits[before:]
        AUDIT.minted.discard(b"eyJhbGciOiJIUzI1NiJ9.e30.planted-minted-token")
