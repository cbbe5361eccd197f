"""Hugging Face task operations: the router paths of a model's task and pipelines on the
hf-inference provider, and the task body forwarded as sent."""

from __future__ import annotations

from typing import Any

from lib.errors import ClientRequestError


def task_path(model: str) -> str:
    """The router path of a model's default task on the hf-inference provider."""
    return f"/hf-inference/models/{model}"


def pipeline_path(model: str, task: str) -> str:
    """The router path of one of a model's pipelines on the hf-inference provider."""
    return f"/hf-inference/models/{model}/pipeline/{task}"


def build_task_payload(body: Any) -> dict[str, Any]:
    """The body of a task route, forwarded as sent; streaming is not relayed on these routes."""
    if getattr(body, "stream", False):
        raise ClientRequestError(
            "Streaming is not supported on task routes; use /v1/chat/completions with stream.",
            param="stream",
        )
    return body.model_dump(exclude_unset=True)
