"""What a token may do: the narrowing rules between a parent key and the tokens it mints.

A token can only narrow its key: models within the key's, limits at most the key's, a life
at most `TOKEN_MAX_TTL_S` and never past the key's expiry. Asking for more is a 400 naming
the field, never a silent cut. Pure functions over simple values; no JWT library here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from lib.errors import TokenScopeError
from lib.model_ids import is_model_allowed, is_valid_model_id

MAX_USER_CHARS = 128
LIMIT_FIELDS = ("rpm", "tpm", "daily_tokens")


@dataclass(frozen=True, slots=True)
class ParentKey:
    """The parts of a client key's policy (issue 12) that bound the tokens it mints.

    `models` None means every model the deployment allows; a limit None means none is set;
    `expires_at` is the unix time from which the key is refused, None if it never expires.
    """

    name: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    expires_at: float | None = None
    key_hash: str = ""  # the key's current secret, in short (`policy.key_hash`)


@dataclass(frozen=True, slots=True)
class TokenAsk:
    """A request for a token (the body of `POST /v1/tokens`); only `user` is required."""

    user: str
    ttl_s: int | None = None
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    cache: bool = True  # False: the response cache is off for the token (a narrowing)


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What one token allows one end user: the claims of a proxy token, as values.

    `models` None: whatever the parent key may use. A limit None is not applied for the
    user (the parent key's limits still are).
    """

    user: str
    key: str
    models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    daily_tokens: int | None
    issued_at: int
    expires_at: int
    jti: str
    key_hash: str = ""
    cache: bool = True  # False: its requests are never answered from, nor kept in, the cache

    @property
    def limits(self) -> dict[str, int | None]:
        """The token's own limits by name, as the mint route answers them."""
        return {"rpm": self.rpm, "tpm": self.tpm, "daily_tokens": self.daily_tokens}


def is_valid_user(user: object) -> bool:
    """True for an end-user id of 1-128 printable characters (no control characters)."""
    return isinstance(user, str) and 0 < len(user) <= MAX_USER_CHARS and user.isprintable()


def grant_token(
    ask: TokenAsk,
    parent: ParentKey,
    *,
    allowed_models: Sequence[str],
    max_ttl_s: int,
    now: float,
) -> TokenGrant:
    """The grant for a new token, or `TokenScopeError` naming the first field asking too much.

    `allowed_models` is the deployment's `ALLOWED_MODELS`, the bound for a key without models.
    Without `ttl_s` the token lives `max_ttl_s`, or until the key expires if that is sooner.
    """
    if not is_valid_user(ask.user):
        raise TokenScopeError(
            f"'user' must be 1-{MAX_USER_CHARS} printable characters.", param="user"
        )
    issued_at = int(now)
    return TokenGrant(
        user=ask.user,
        key=parent.name,
        models=_narrow_models(ask.models, parent, allowed_models),
        rpm=_narrow_limit("rpm", ask.rpm, parent.rpm),
        tpm=_narrow_limit("tpm", ask.tpm, parent.tpm),
        daily_tokens=_narrow_limit("daily_tokens", ask.daily_tokens, parent.daily_tokens),
        issued_at=issued_at,
        expires_at=issued_at + _narrow_ttl(ask.ttl_s, parent, max_ttl_s, issued_at),
        jti=secrets.token_urlsafe(16),
        key_hash=parent.key_hash,
        cache=ask.cache is not False,
    )


def _narrow_models(
    asked: tuple[str, ...] | None, parent: ParentKey, allowed_models: Sequence[str]
) -> tuple[str, ...]:
    bound = tuple(parent.models) if parent.models is not None else tuple(allowed_models)
    if asked is None:
        return bound
    if not asked:
        raise TokenScopeError("'models' must name at least one model.", param="models")
    for model in asked:
        if model != "*" and not is_valid_model_id(model):
            raise TokenScopeError(
                f"'models' holds '{model[:100]}', which is not a Hub model id.", param="models"
            )
        if not is_model_allowed(model, bound):
            raise TokenScopeError(
                f"'models' asks for '{model[:100]}', which key '{parent.name}' may not use. "
                f"Its models: {', '.join(bound)}.",
                param="models",
            )
    return tuple(dict.fromkeys(asked))


def _narrow_limit(name: str, asked: int | None, bound: int | None) -> int | None:
    if asked is None:
        return None
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        raise TokenScopeError(f"'{name}' must be a positive integer.", param=name)
    if bound is not None and asked > bound:
        raise TokenScopeError(
            f"'{name}' asks for {asked}, more than the key's own {name} ({bound}).", param=name
        )
    return asked


def _narrow_ttl(asked: int | None, parent: ParentKey, max_ttl_s: int, now: int) -> int:
    key_left = None if parent.expires_at is None else int(parent.expires_at - now)
    if key_left is not None and key_left < 1:
        raise TokenScopeError(f"Key '{parent.name}' has expired; it mints no tokens.")
    if asked is None:
        return max_ttl_s if key_left is None else min(max_ttl_s, key_left)
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        raise TokenScopeError("'ttl_s' must be a positive integer of seconds.", param="ttl_s")
    if asked > max_ttl_s:
        raise TokenScopeError(
            f"'ttl_s' asks for {asked} s, more than this deployment's TOKEN_MAX_TTL_S "
            f"({max_ttl_s} s).",
            param="ttl_s",
        )
    if key_left is not None and asked > key_left:
        raise TokenScopeError(
            f"'ttl_s' asks for {asked} s, past the expiry of key '{parent.name}' "
            f"(in {key_left} s).",
            param="ttl_s",
        )
    return asked
