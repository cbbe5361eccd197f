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
    # Another model follows this one (lib/inference/fallbacks.py): a failure is not retried
    # and the answer must start within FALLBACK_TIMEOUT_S, so the next has time to answer.
    fallback_ready: bool = False
    requested_model: str | None = None  # the model asked for, when a fallback answered


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A successful, fully read JSON answer from the router."""

    content: bytes
    data: Any
