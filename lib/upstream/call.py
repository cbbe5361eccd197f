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
    response_model: str | None = None  # the model a JSON answer names (for traces)


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A successful, fully read JSON answer from the router."""

    content: bytes
    data: Any
