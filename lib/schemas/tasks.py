"""Hugging Face task bodies: `inputs`, optional `parameters`, and what else a task takes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskRequest(BaseModel):
    """Any hf-inference task body: `inputs`, optional `parameters`, and task-specific fields."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [{"inputs": "I love this proxy!", "parameters": {"top_k": 2}}]
        },
    )

    inputs: Any = Field(description="The task's input: a text, a list of texts, or an object.")
    parameters: dict[str, Any] | None = None
    stream: bool = False
