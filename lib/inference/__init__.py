"""The proxy's operations, between the routes and the upstream: which model a request goes
to, the upstream request built from the caller's body, and the answer shaped for the caller
(chat and generate, embeddings, the Responses API, Hugging Face tasks).

It may import the upstream, access and schemas packages, `lib.settings` and `lib.errors`;
never the routes.
"""

from lib.inference.chat import (
    CHAT_PATH,
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

__all__ = [
    "CHAT_PATH",
    "EMBEDDING_CONCURRENCY",
    "FALLBACK_HEADER",
    "RESPONSES_PATH",
    "ResponseUsage",
    "build_chat_payload",
    "build_generate_payload",
    "build_responses_payload",
    "build_task_payload",
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
