"""The serverless entry: Vercel serves `app`; AWS Lambda calls `handler`."""

import asyncio
import os
from typing import Any

from fastapi import FastAPI
from mangum import Mangum

from lib.app import create_app
from lib.settings import SettingsError


def _create_app_or_exit() -> FastAPI:
    try:
        return create_app()
    except SettingsError as exc:  # one clear line naming the variable, not a traceback
        raise SystemExit(f"promptgate: {exc}") from None


# Vercel finds the entrypoint by a top-level `app = ...` assignment (its static analysis
# skips one made inside `try:`, and then builds no function at all): keep this shape.
app = _create_app_or_exit()

# One event loop for every warm Lambda invocation, so the upstream connection pool lives on.
_lambda_loop = asyncio.new_event_loop()
asyncio.set_event_loop(_lambda_loop)  # before Mangum, which would otherwise make one implicitly
# API Gateway leaves a named HTTP API stage, or a custom domain's base path mapping, in the
# path it passes on; API_GATEWAY_BASE_PATH (say "/prod") strips it (docs/serverless.md).
_mangum = Mangum(
    app, lifespan="off", api_gateway_base_path=os.environ.get("API_GATEWAY_BASE_PATH", "/")
)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda's entry point: one API Gateway or Function URL event in, its response out."""
    # Mangum runs on the thread's current loop; an `asyncio.run()` elsewhere in the process
    # (another library, a previous handler) leaves none set, and Mangum would then fail.
    asyncio.set_event_loop(_lambda_loop)
    return _mangum(event, context)
