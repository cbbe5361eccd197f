"""The serverless entry: Vercel serves `app`; AWS Lambda calls `handler`."""

import gc

# Every object a cold start builds (modules, classes, validators, the app) lives as long as
# the process: collecting while they are made finds almost no garbage yet cost a cold start
# 40-65 ms of CPU, and each later full collection would scan them all again. So the collector
# waits until the app is built, and then leaves what the build made out of its scans for good
# (gc.freeze); it runs as usual on everything made after (tests/test_import_footprint.py).
gc.disable()

from lib.app import create_app_or_exit  # noqa: E402  (after gc.disable, on purpose)
from lib.lambda_handler import LambdaHandler  # noqa: E402

# Vercel finds the entrypoint by this top-level `app = ...` assignment: keep its shape.
app = create_app_or_exit()
handler = LambdaHandler(
    app, api_gateway_base_path=app.state.services.settings.api_gateway_base_path
)
gc.freeze()
gc.enable()
