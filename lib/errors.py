"""The project's exceptions. The app factory maps each to one HTTP response.

ProxyError                          500 server_error
├── ClientRequestError              400 invalid_request_error
│   ├── InvalidFieldError           422 invalid_request_error (a field the schema cannot check)
│   ├── AuthenticationError         401 authentication_error (key_expired: a key past its date)
│   │   └── TokenRejectedError      401 authentication_error invalid_token (the rule it broke)
│   │       └── TokenExpiredError   401 authentication_error token_expired
│   ├── TokenScopeError             400 invalid_request_error (a token asked beyond its key)
│   ├── TokenNotAllowedError        403 permission_error (a token where only a key will do)
│   ├── ModelNotAllowedError        403 permission_error
│   ├── UnsupportedMediaTypeError   415 invalid_request_error (a compressed body)
│   ├── NotFoundError               404 not_found_error (no such model, task or route here)
│   │   └── NotStoredError          404 not_found_error, code not_stored (promptgate keeps none)
│   ├── RateLimitExceededError      429 rate_limit_error (a key's minute is spent; Retry-After)
│   └── QuotaExceededError          429 insufficient_quota (a day's budget is spent; no retry)
├── NotConfiguredError              503 server_error (the deployment lacks a setting)
├── LimitStoreError                 503 server_error (the limit store is unreachable)
├── IdentityProviderUnavailableError 503 server_error (its key set cannot be fetched)
└── UpstreamError                   502 upstream_error
    ├── UpstreamAuthError           502 (the server's HF_TOKEN was refused)
    ├── UpstreamCreditsError        402 insufficient_quota
    ├── UpstreamModelNotFoundError  404 not_found_error
    ├── UpstreamRejectedError       400/422 invalid_request_error (upstream's message)
    ├── UpstreamRateLimitError      429 rate_limit_error (Retry-After passed on)
    └── UpstreamTimeoutError        504 timeout_error

Messages are written for the caller: they never hold a secret or the caller's prompt.
`should_retry` is what the answer tells the caller's client (`x-should-retry`): False where
this proxy has done the retrying, or retrying cannot help; None leaves it to the client.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error promptgate answers with; carries the HTTP status and error shape."""

    status_code = 500
    error_type = "server_error"
    code = "internal_error"
    should_retry: bool | None = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error shape: `{"error": {"message", "type", "param", "code"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ClientRequestError(ProxyError):
    """The caller's request cannot be served as sent."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"
    should_retry = None


class InvalidFieldError(ClientRequestError):
    """A field is malformed in a way the request schema cannot express (a path's model id)."""

    status_code = 422
    code = "invalid_value"


class AuthenticationError(ClientRequestError):
    """No client key, or one this deployment does not know."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class TokenRejectedError(AuthenticationError):
    """The bearer is a token this deployment does not accept; the message names the rule."""

    code = "invalid_token"


class TokenExpiredError(TokenRejectedError):
    """The token was valid once; its `exp` has passed. The app should fetch a new one."""

    code = "token_expired"


class TokenScopeError(ClientRequestError):
    """A token was asked for more than its parent key may grant; `param` names the field."""

    code = "token_scope_exceeded"


class TokenNotAllowedError(ClientRequestError):
    """A token was presented where only a client key will do (minting tokens)."""

    status_code = 403
    error_type = "permission_error"
    code = "token_not_allowed"


class AdminKeyRequiredError(ClientRequestError):
    """A client key or token was presented on an owner's route (the usage ledger)."""

    status_code = 403
    error_type = "permission_error"
    code = "admin_key_required"


class ModelNotAllowedError(ClientRequestError):
    """The model is a valid id but not on this deployment's allowlist."""

    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class UnsupportedMediaTypeError(ClientRequestError):
    """The body comes in an encoding the proxy does not read (gzip, deflate, ...)."""

    status_code = 415
    code = "unsupported_content_encoding"


class NotFoundError(ClientRequestError):
    """What the caller asked for is not served here: a model off the allowlist, a task the
    router has no pipeline for, or a route promptgate does not offer (the message says what to
    use instead)."""

    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class NotStoredError(NotFoundError):
    """A stored response was asked for; promptgate is stateless and keeps none."""

    code = "not_stored"


class NotEnabledError(NotFoundError):
    """An optional feature the owner has not turned on (the message says how): a 404, which
    no SDK or load balancer retries, not a 503."""

    code = "not_enabled"


class NotConfiguredError(ProxyError):
    """The deployment is missing a setting it needs to serve this route."""

    status_code = 503
    error_type = "server_error"
    code = "proxy_not_configured"


class RateLimitExceededError(ClientRequestError):
    """The caller's key has spent this minute's requests or tokens; `Retry-After` says when."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceededError(ClientRequestError):
    """A day's token budget (the key's, or the whole deployment's) is spent until UTC midnight."""

    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"
    should_retry = False  # until midnight: an SDK's retries cannot help


class LimitStoreError(ProxyError):
    """The shared limit store (Redis) failed or did not answer within its bound."""

    status_code = 503
    error_type = "server_error"
    code = "limit_store_unavailable"


class IdentityProviderUnavailableError(ProxyError):
    """The identity provider's keys (JWKS) could not be fetched, so no token can be checked."""

    status_code = 503
    error_type = "server_error"
    code = "identity_provider_unavailable"


class UpstreamError(ProxyError):
    """The Hugging Face router failed or answered something unusable."""

    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    """The router refused the server's own token: the operator's problem, not the caller's."""

    code = "upstream_auth_failed"


class UpstreamCreditsError(UpstreamError):
    """The server's Hugging Face account is out of credits."""

    status_code = 402
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamModelNotFoundError(UpstreamError):
    """The router does not know the model."""

    status_code = 404
    error_type = "not_found_error"
    code = "model_not_found"


class UpstreamRejectedError(UpstreamError):
    """The router refused the request itself (400 or 422); its reason is passed on."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, *, status_code: int = 400, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code


class UpstreamRateLimitError(UpstreamError):
    """The router is rate limiting or overloaded."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class UpstreamTimeoutError(UpstreamError):
    """The request's deadline passed before the router answered."""

    status_code = 504
    error_type = "timeout_error"
    code = "upstream_timeout"
