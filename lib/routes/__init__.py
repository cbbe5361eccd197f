"""The HTTP routes, one module per route family, each thin: it checks what the caller sent,
calls an operation in `lib.inference`, and answers. `gate` identifies and admits the caller
before any body is read.

It may import every package below it (inference, upstream, access, schemas, http) and the
top modules; only the app factory imports it.
"""

from __future__ import annotations

from fastapi import FastAPI

from lib.routes.api_document import document_error_bodies
from lib.routes.chat import chat_router
from lib.routes.embeddings import embeddings_router
from lib.routes.gate import Services
from lib.routes.models import models_router
from lib.routes.pages import include_pages
from lib.routes.responses import responses_router
from lib.routes.service import health_router, limits_router
from lib.routes.signposts import signpost_router
from lib.routes.tasks import TASK_ROUTE_PREFIX, task_router
from lib.routes.tokens import token_router
from lib.routes.usage import usage_recorder, usage_router

__all__ = ["TASK_ROUTE_PREFIX", "Services", "include_routes", "usage_recorder"]

# In matching order (the API document lists them in it too).
_ROUTERS = (
    chat_router,
    embeddings_router,
    models_router,
    limits_router,
    responses_router,
    health_router,
    task_router,
    signpost_router,
    token_router,
    usage_router,
)


def include_routes(app: FastAPI) -> None:
    """Add every route, the pages last, and the error bodies to the API document."""
    for router in _ROUTERS:
        app.include_router(router)
    include_pages(app)
    document_error_bodies(app)
