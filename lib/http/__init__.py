"""HTTP plumbing between the server and the routes: the body limit and deadline, strict JSON
decoding of request bodies, cancellation when a caller hangs up, request ids and the log line.

Pure ASGI and Starlette; it may import only `lib.errors` (nothing about models or keys).
"""

from lib.http.access_log import (
    LOGGER_NAME,
    RequestContextMiddleware,
    ResponseEndHook,
    configure_logging,
)
from lib.http.body_limit import BodyLimitMiddleware
from lib.http.disconnect import CancelOnDisconnectMiddleware
from lib.http.request_body import (
    MAX_JSON_DEPTH,
    DecodedRequest,
    decode_json_body,
    read_json_request,
)

__all__ = [
    "LOGGER_NAME",
    "MAX_JSON_DEPTH",
    "BodyLimitMiddleware",
    "CancelOnDisconnectMiddleware",
    "DecodedRequest",
    "RequestContextMiddleware",
    "ResponseEndHook",
    "configure_logging",
    "decode_json_body",
    "read_json_request",
]
