"""A suite-wide watch for leaked secrets: every response and log line is searched for canaries.

Every test value shaped like a secret is a canary (`hf_test_canary...`, `pg_test_canary...`,
`hf_testcanary...`; test `TOKEN_SECRET`s are canaries too). Apps run through `audited()` have
each response's headers and body scanned; promptgate's log lines are scanned as they are
written. The secrets the suite configures most (`AUDIT.watch`) are also looked for in part:
any PIECE-long run of one is a leak. Every token an audited app mints (`POST /v1/tokens`) is
watched for as well: it may appear in the answer to its minting, never in a log line. The
session fails at its end if any of these was seen (tests/conftest.py).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CANARY = re.compile(rb"(?:hf|pg)_test_?canary[A-Za-z0-9_]*")
# As many characters of a secret as make a leak (lib/redaction.py redacts as many).
PIECE = 12


@dataclass
class SecretAudit:
    """What was scanned, and where a canary turned up."""

    scanned: int = 0
    hits: list[str] = field(default_factory=list)
    pieces: set[bytes] = field(default_factory=set)
    minted: set[bytes] = field(default_factory=set)

    def watch(self, secret: str) -> None:
        """Also look for every PIECE-long run of `secret`, not only for whole canaries."""
        raw = secret.encode()
        self.pieces.update(raw[i : i + PIECE] for i in range(len(raw) - PIECE + 1))

    def scan(self, where: str, data: bytes) -> None:
        """Record any canary, or any watched secret's piece, found in `data`."""
        self.scanned += 1
        for match in CANARY.finditer(data):
            self.hits.append(f"{where}: {match.group().decode()}")
        for piece in self.pieces:
            if piece in data:
                self.hits.append(f"{where}: a piece of a secret, {piece.decode()!r}")
                break

    def watch_minted(self, token: str) -> None:
        """Watch for `token`, minted by the proxy, in every log line from now on."""
        self.minted.add(token.encode())

    def scan_log(self, where: str, data: bytes) -> None:
        """Record any canary or minted token found in a log line (never the token itself)."""
        self.scan(where, data)
        for token in self.minted:
            if token in data:
                self.hits.append(f"{where}: a minted token ending ...{token[-6:].decode()}")


AUDIT = SecretAudit()


def audited(app: ASGIApp) -> ASGIApp:
    """Wrap `app` so every response it sends is scanned for canaries."""

    async def audited_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        where = f"{scope['method']} {scope['path']}"
        tail = b""
        minting = scope["path"] == "/v1/tokens"
        minted = b""

        async def scanning_send(message: Message) -> None:
            nonlocal tail, minted
            if message["type"] == "http.response.start":
                headers = b"\n".join(k + b": " + v for k, v in message.get("headers", ()))
                AUDIT.scan(f"{where} headers", headers)
            elif message["type"] == "http.response.body":
                # Keep a tail so a canary split across two chunks is still seen.
                body = tail + message.get("body", b"")
                AUDIT.scan(f"{where} body", body)
                tail = body[-64:]
                if minting:
                    minted += message.get("body", b"")
                    if not message.get("more_body", False):
                        _watch_minted_token(minted)
            await send(message)

        await app(scope, receive, scanning_send)

    return audited_app


def _watch_minted_token(body: bytes) -> None:
    try:
        token = json.loads(body).get("token")
    except (ValueError, AttributeError):
        return
    if isinstance(token, str):
        AUDIT.watch_minted(token)


class AuditingLogHandler(logging.Handler):
    """Scans every promptgate log line for canaries and minted tokens."""

    def emit(self, record: logging.LogRecord) -> None:
        AUDIT.scan_log(f"log {record.name}", self.format(record).encode())
