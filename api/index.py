"""The serverless entry: Vercel serves `app`; AWS Lambda calls `handler`."""

from mangum import Mangum

from lib.app import create_app
from lib.settings import SettingsError

try:
    app = create_app()
except SettingsError as exc:  # one clear line naming the variable, not a traceback
    raise SystemExit(f"promptgate: {exc}") from None
handler = Mangum(app, lifespan="off")
