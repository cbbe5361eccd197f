"""Client keys: who is calling, told from the `Authorization` header in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Callable

from lib.access.bearer import bearer_value
from lib.access.policy import ANONYMOUS, NamedKey, Policy
from lib.errors import AuthenticationError, NotConfiguredError

# Keys made by `python -m lib.keys new`: a prefix secret scanners can match, then 43 letters
# and digits (256 bits). scripts/check_secrets.py looks for this shape in tracked files.
KEY_PREFIX = "pg_"
_KEY_ALPHABET = string.ascii_letters + string.digits
_KEY_LENGTH = 43
_HINT = "Send the proxy's client key as 'Authorization: Bearer <key>'."


def new_key() -> str:
    """A new high-entropy client key, `pg_` and 43 letters and digits."""
    return KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(_KEY_LENGTH))


class KeyRing:
    """The configured keys, held as SHA-256 digests, each with its name and policy."""

    def __init__(
        self,
        keys: list[NamedKey],
        *,
        anonymous: Policy | None,
        clock: Callable[[], float],
    ) -> None:
        self._keys = keys
        self._anonymous = NamedKey(ANONYMOUS, b"", anonymous) if anonymous is not None else None
        self._clock = clock

    @property
    def configured(self) -> bool:
        """True when at least one key is set."""
        return bool(self._keys)

    @property
    def allow_anonymous(self) -> bool:
        """True when callers without a key are served (as the `anonymous` key)."""
        return self._anonymous is not None

    def identify(self, authorization: str | None) -> NamedKey:
        """The key the raw `Authorization` header holds, or raise.

        With anonymity on, a request without a key is served as `anonymous`. A key that is
        sent is still checked against the configured ones, and a Hugging Face token is always
        refused; only with no keys configured at all is any other value let through (SDKs
        such as openai's insist on sending one). Raises `AuthenticationError` (401: missing,
        unknown or expired key) or `NotConfiguredError` (503: no keys, no anonymity).
        """
        if not self._keys and self._anonymous is None:
            raise NotConfiguredError(
                "This deployment has no client keys: set PROXY_API_KEYS or KEYS_FILE in the "
                "server's environment, or ALLOW_ANONYMOUS=true to serve without keys."
            )
        key = bearer_value(authorization)
        found = self._find(key) if key else None
        if found is None:
            if key.startswith("hf_"):
                raise AuthenticationError(
                    "That looks like a Hugging Face token, which this proxy does not accept "
                    f"(and does not forward). {_HINT}"
                )
            if not key and self._anonymous is None:
                raise AuthenticationError(f"Missing API key. {_HINT}", code="missing_api_key")
            if key and self._keys:
                raise AuthenticationError(f"Invalid API key. {_HINT}")
            assert self._anonymous is not None
            return self._anonymous
        expires = found.policy.expires
        if expires is not None and self._clock() >= expires.timestamp():
            raise AuthenticationError(
                f"This client key expired at {expires:%Y-%m-%d %H:%M} UTC; ask the operator "
                "for a new one.",
                code="key_expired",
            )
        return found

    def knows(self, key: str) -> bool:
        """True when `key` (the bearer value) is one of the configured client keys."""
        return bool(key) and self._find(key) is not None

    def _find(self, key: str) -> NamedKey | None:
        presented = hashlib.sha256(key.encode()).digest()
        # Compare against every digest so the time taken does not say which one matched.
        found = None
        for named in self._keys:
            if hmac.compare_digest(presented, named.digest):
                found = named
        return found
