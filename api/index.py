"""The serverless entry: Vercel serves `app`; AWS Lambda calls `handler`."""

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
handler = Mangum(app, lifespan="off")
