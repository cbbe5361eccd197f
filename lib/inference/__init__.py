"""The proxy's operations, between the routes and the upstream: which model a request goes
to, the upstream request built from the caller's body, and the answer shaped for the caller
(chat and generate, embeddings, the Responses API, Hugging Face tasks).

It may import the upstream, access and schemas packages, `lib.settings` and `lib.errors`;
never the routes. The response cache's operations (`cached_chat`, `cached_generate`,
`cached_embeddings`, `cached_response`) are imported on first use: a deployment without the
cache never loads them.
"""

from typing import Any

from lib.inference.chat import (
    CHAT_PATH,
    EventsWrap,
    build_chat_payload,
    build_generate_payload,
    forward_chat,
    generate_text,
    stream_chat,
    stream_generated_text,
)
from lib.inference.embeddings import (
    EMBEDDING_CONCURRENCY,
    create_embeddings,
    extract_features,
    relay_openai_embeddings,
    sentence_vectors,
)
from lib.inference.fallbacks import FALLBACK_HEADER, with_fallbacks
from lib.inference.models import resolve_embedding_model, resolve_model, resolve_task_model
from lib.inference.responses import (
    RESPONSES_PATH,
    ResponseUsage,
    build_responses_payload,
    forward_response,
    refuse_stored_response,
    response_usage,
    stream_response,
)
from lib.inference.tasks import (
    build_task_payload,
    cap_task_generation,
    pipeline_path,
    run_task,
    task_path,
)

_CACHED = {
    "cached_chat": "lib.inference.chat_cache",
    "cached_generate": "lib.inference.chat_cache",
    "cached_embeddings": "lib.inference.embeddings_cache",
    "cached_response": "lib.inference.responses_cache",
}


def __getattr__(name: str) -> Any:
    """The response cache's operations, imported on first use."""
    if name in _CACHED:
        import importlib

        return getattr(importlib.import_module(_CACHED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHAT_PATH",
    "EMBEDDING_CONCURRENCY",
    "FALLBACK_HEADER",
    "RESPONSES_PATH",
    "EventsWrap",
    "ResponseUsage",
    "build_chat_payload",
    "build_generate_payload",
    "build_responses_payload",
    "build_task_payload",
    "cached_chat",
    "cached_embeddings",
    "cached_generate",
    "cached_response",
    "cap_task_generation",
    "create_embeddings",
    "extract_features",
    "forward_chat",
    "forward_response",
    "generate_text",
    "pipeline_path",
    "refuse_stored_response",
    "relay_openai_embeddings",
    "resolve_embedding_model",
    "resolve_model",
    "resolve_task_model",
    "response_usage",
    "run_task",
    "sentence_vectors",
    "stream_chat",
    "stream_generated_text",
    "stream_response",
    "task_path",
    "with_fallbacks",
]
