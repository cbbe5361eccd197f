"""Error bodies, as the API documents them: the OpenAI shape, and the Hugging Face one."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    """The inside of an error body."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error promptgate returns: the shape the OpenAI SDK parses."""

    error: ErrorDetail


class TaskErrorBody(BaseModel):
    """Errors on `/models/*`: the shape huggingface_hub reads (`error_type` names the kind)."""

    error: str
    error_type: str
