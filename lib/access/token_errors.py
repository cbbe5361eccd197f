"""The errors a bearer token can earn. Subclasses of the project's own (lib/errors.py).

TokenRejectedError           401 authentication_error  invalid_token
└── TokenExpiredError        401 authentication_error  token_expired
TokenScopeError              400 invalid_request_error token_scope_exceeded (param: the field)
TokenNotAllowedError         403 permission_error      token_not_allowed
IdentityProviderUnavailableError 503 server_error      identity_provider_unavailable

Messages name the rule that failed; they never hold the token, a secret, or a claim's value.
"""

from __future__ import annotations

from lib.errors import AuthenticationError, ClientRequestError, ProxyError


class TokenRejectedError(AuthenticationError):
    """The bearer is a token this deployment does not accept; the message says which rule."""

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


class IdentityProviderUnavailableError(ProxyError):
    """The identity provider's keys (JWKS) could not be fetched, so no token can be checked."""

    status_code = 503
    error_type = "server_error"
    code = "identity_provider_unavailable"
