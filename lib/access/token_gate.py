"""Bearer tokens at the gate: which verifier a token goes to, whose key it spends, which user
it names, and minting new ones. Built by `AccessControl` only when tokens are configured
(`TOKEN_SECRET`, `OIDC_ISSUER`), since it loads PyJWT.

A proxy token spends its parent key (looked up by name, and void once that key is gone or
expired) and counts its user under that key with the token's own limits. An identity
provider's token spends no key: its user gets the `[users]` policy.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lib.access.bearer import read_unverified, require_token_size
from lib.access.identity import OidcVerifier
from lib.access.jwks_source import JwksSource
from lib.access.policy import ANONYMOUS, OIDC_KEY_NAME, NamedKey, Policy, key_hash
from lib.access.token_scope import ParentKey, TokenAsk, TokenGrant, grant_token
from lib.access.tokens import ISSUER, ProxyTokens
from lib.errors import NotEnabledError, TokenNotAllowedError, TokenRejectedError
from lib.settings import Settings

# The key that identity-provider users spend: it has no limits of its own (GLOBAL_DAILY_TOKENS
# still counts on it); each user's come from `[users]`. No key name holds a colon, so none
# can share its windows in the limit store.


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """Who a valid token speaks for: the key it spends, and its user with the user's policy."""

    key: NamedKey
    user: NamedKey


class TokenGate:
    """Verifies bearer tokens (the proxy's and the identity provider's) and mints the proxy's."""

    def __init__(
        self,
        settings: Settings,
        keys: Sequence[NamedKey],
        users: Policy,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._allowed_models = list(settings.allowed_models)
        self._keys = {key.name: key for key in keys}
        self._users = users
        self._clock = clock
        self._proxy_tokens: ProxyTokens | None = None
        if settings.token_secret is not None:
            previous = settings.token_secret_previous
            self._proxy_tokens = ProxyTokens(
                settings.token_secret.get_secret_value(),
                previous_secret=previous.get_secret_value() if previous else None,
                max_ttl_s=settings.token_max_ttl_s,
                clock=clock,
            )
        self._oidc_issuer = settings.oidc_issuer
        self._oidc: OidcVerifier | None = None
        if settings.oidc_issuer is not None and settings.oidc_audience is not None:
            source = JwksSource(settings.oidc_issuer, settings.oidc_jwks_url)
            self._oidc = OidcVerifier(
                settings.oidc_issuer, settings.oidc_audience, source, clock=clock
            )
        self._oidc_key = NamedKey(OIDC_KEY_NAME, b"", Policy())

    async def identify(self, token: str) -> TokenHolder:
        """The key and user a token speaks for; raises `TokenRejectedError` (401, the rule
        broken), `TokenExpiredError` or `IdentityProviderUnavailableError` (503)."""
        require_token_size(token)
        unverified = read_unverified(token)
        if unverified is None:
            raise TokenRejectedError("The bearer value is not a well-formed token.")
        issuer = unverified.issuer
        if issuer == ISSUER and self._proxy_tokens is not None:
            return self._holder_of(self._proxy_tokens.verify(token))
        if issuer is not None and issuer == self._oidc_issuer and self._oidc is not None:
            signed_in = await self._oidc.verify(token)
            name = _user_name(OIDC_KEY_NAME, signed_in.user)
            user = NamedKey(name, b"", self._users, user=signed_in.user)
            return TokenHolder(key=self._oidc_key, user=user)
        raise TokenRejectedError("The token's issuer (iss) is not one this proxy accepts.")

    def mint(self, key: NamedKey, ask: TokenAsk) -> tuple[str, TokenGrant]:
        """A new token for `ask`, narrowing `key`; raises `TokenScopeError` (400, the field)."""
        if self._proxy_tokens is None:
            raise NotEnabledError(
                "This deployment mints no tokens: the owner turns minting on by setting "
                "TOKEN_SECRET (32+ random characters) in the server's environment."
            )
        if key.name == ANONYMOUS:
            raise TokenNotAllowedError(
                "Minting a token needs a client key; anonymous callers cannot mint.",
                code="client_key_required",
            )
        policy = key.policy
        parent = ParentKey(
            name=key.name,
            models=policy.models,
            rpm=policy.rpm,
            tpm=policy.tpm,
            daily_tokens=policy.daily_tokens,
            expires_at=policy.expires.timestamp() if policy.expires else None,
            key_hash=key_hash(key.digest),
        )
        grant = grant_token(
            ask,
            parent,
            allowed_models=self._allowed_models,
            max_ttl_s=self._proxy_tokens.max_ttl_s,
            now=self._clock(),
        )
        return self._proxy_tokens.mint(grant), grant

    def _holder_of(self, grant: TokenGrant) -> TokenHolder:
        key = self._keys.get(grant.key)
        if key is None:
            raise TokenRejectedError(
                "The key that minted this token is no longer configured, so the token is void."
            )
        if not hmac.compare_digest(grant.key_hash, key_hash(key.digest)):
            raise TokenRejectedError(
                "The key that minted this token has been rotated (its sha256 changed), so "
                "the token is void; mint a new one with the new key."
            )
        expires = key.policy.expires
        if expires is not None and self._clock() >= expires.timestamp():
            raise TokenRejectedError(
                "The key that minted this token has expired, so the token is void."
            )
        policy = Policy(
            rpm=grant.rpm,
            tpm=grant.tpm,
            daily_tokens=grant.daily_tokens,
            models=grant.models,
            cache_forbidden=not grant.cache,
        )
        user = NamedKey(_user_name(key.name, grant.user), b"", policy, user=grant.user)
        return TokenHolder(key=key, user=user)


def _user_name(scope: str, user: str) -> str:
    """The user's windows in the limit store: under the key's (`<key>:user:<hash>`, see
    `stores.store_key`), hashed (user ids may be long or odd)."""
    return f"{scope}:user:{hashlib.sha256(user.encode()).hexdigest()[:32]}"
