"""One caller request's dealings with the upstream, and a JSON answer read from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class UpstreamCall:
    """One caller request's dealings with the router: its id, and what happened, for the log."""

    request_id: str
    model: str
    attempts: int = 0
    status: int | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A successful, fully read JSON answer from the router."""

    content: bytes
    data: Any
