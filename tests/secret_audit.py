"""A suite-wide watch for leaked secrets: every response and log line is searched for canaries.

Every test value shaped like a secret is a canary (`hf_test_canary...`, `pg_test_canary...`,
`hf_testcanary...`). Apps run through `audited()` have each response's headers and body
scanned; promptgate's log lines are scanned as they are written. The session fails at
its end if any canary was seen (tests/conftest.py). The secrets the suite configures most
(`AUDIT.watch`) are also looked for in part: any PIECE-long run of one is a leak.
"""

from __future__ import annotations

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


AUDIT = SecretAudit()


def audited(app: ASGIApp) -> ASGIApp:
    """Wrap `app` so every response it sends is scanned for canaries."""

    async def audited_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        where = f"{scope['method']} {scope['path']}"
        tail = b""

        async def scanning_send(message: Message) -> None:
            nonlocal tail
            if message["type"] == "http.response.start":
                headers = b"\n".join(k + b": " + v for k, v in message.get("headers", ()))
                AUDIT.scan(f"{where} headers", headers)
            elif message["type"] == "http.response.body":
                # Keep a tail so a canary split across two chunks is still seen.
                body = tail + message.get("body", b"")
                AUDIT.scan(f"{where} body", body)
                tail = body[-64:]
            await send(message)

        await app(scope, receive, scanning_send)

    return audited_app


class AuditingLogHandler(logging.Handler):
    """Scans every promptgate log line."""

    def emit(self, record: logging.LogRecord) -> None:
        AUDIT.scan(f"log {record.name}", self.format(record).encode())
