"""Request and response bodies as the API documents and validates them, one module per route
family, and what a validation error tells the caller (the field, and the rule it broke).

Pydantic models only; it may import `lib.model_ids` and nothing else of promptgate.
"""

from lib.schemas.chat import (
    ChatCompletionRequest,
    ChatMessage,
    GenerateRequest,
    GenerateResponse,
    StreamOptions,
    Usage,
)
from lib.schemas.embeddings import (
    MAX_EMBEDDING_INPUT_CHARS,
    MAX_EMBEDDING_INPUTS,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from lib.schemas.errors import ErrorBody, ErrorDetail, TaskErrorBody
from lib.schemas.fields import MODEL_ID_SCHEMA_PATTERN, TASK_MODEL_SCHEMA_PATTERN
from lib.schemas.responses import ResponsesRequest
from lib.schemas.service import (
    Health,
    KeyPolicy,
    LimitsRemaining,
    LimitsReport,
    ModelCard,
    ModelList,
)
from lib.schemas.tasks import TaskRequest
from lib.schemas.tokens import TokenLimits, TokenRequest, TokenResponse
from lib.schemas.usage import UsageCounts, UsageGroup, UsagePoint, UsageReportBody, UsageSpender
from lib.schemas.validation import explain_validation_error

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "MAX_EMBEDDING_INPUT_CHARS",
    "MODEL_ID_SCHEMA_PATTERN",
    "TASK_MODEL_SCHEMA_PATTERN",
    "ChatCompletionRequest",
    "ChatMessage",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "ErrorBody",
    "ErrorDetail",
    "GenerateRequest",
    "GenerateResponse",
    "Health",
    "KeyPolicy",
    "LimitsRemaining",
    "LimitsReport",
    "ModelCard",
    "ModelList",
    "ResponsesRequest",
    "StreamOptions",
    "TaskErrorBody",
    "TaskRequest",
    "TokenLimits",
    "TokenRequest",
    "TokenResponse",
    "Usage",
    "UsageCounts",
    "UsageGroup",
    "UsagePoint",
    "UsageReportBody",
    "UsageSpender",
    "explain_validation_error",
]
