"""The serverless entry: Vercel serves `app`; AWS Lambda calls `handler`."""

from lib.app import create_app_or_exit
from lib.lambda_handler import LambdaHandler

# Vercel finds the entrypoint by this top-level `app = ...` assignment: keep its shape.
app = create_app_or_exit()
handler = LambdaHandler(
    app, api_gateway_base_path=app.state.services.settings.api_gateway_base_path
)
