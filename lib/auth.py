"""Client keys: who may spend this deployment's Hugging Face token."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from lib.errors import AuthenticationError, NotConfiguredError

_HINT = "Send the proxy's client key as 'Authorization: Bearer <key>'."


class ClientKeys:
    """The configured client keys, held as SHA-256 digests and compared in constant time.

    An entry `sha256:<hex>` is already a digest; any other entry is the key itself.
    """

    def __init__(self, entries: list[SecretStr], *, allow_anonymous: bool) -> None:
        self._digests = [_digest_of_entry(entry.get_secret_value()) for entry in entries]
        self.allow_anonymous = allow_anonymous

    @property
    def configured(self) -> bool:
        """True when at least one key is set."""
        return bool(self._digests)

    def check(self, authorization: str | None) -> None:
        """Accept the request or raise; `authorization` is the raw Authorization header.

        With `allow_anonymous`, a request without a key is served. A key that is sent is
        still checked against the configured ones, and a Hugging Face token is always
        refused; only with no keys configured at all is any other value let through (SDKs
        such as openai's insist on sending one).
        """
        if not self._digests and not self.allow_anonymous:
            raise NotConfiguredError(
                "This deployment has no client keys: set PROXY_API_KEYS in the server's "
                "environment, or ALLOW_ANONYMOUS=true to serve without keys."
            )
        key = _bearer_value(authorization)
        if key and self._matches(key):
            return
        if key.startswith("hf_"):
            raise AuthenticationError(
                "That looks like a Hugging Face token, which this proxy does not accept "
                f"(and does not forward). {_HINT}"
            )
        if not key and not self.allow_anonymous:
            raise AuthenticationError(f"Missing API key. {_HINT}", code="missing_api_key")
        if key and self._digests:
            raise AuthenticationError(f"Invalid API key. {_HINT}")

    def _matches(self, key: str) -> bool:
        presented = hashlib.sha256(key.encode()).digest()
        # Compare against every digest so the time taken does not say which one matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched


def _digest_of_entry(entry: str) -> bytes:
    if entry.startswith("sha256:"):
        return bytes.fromhex(entry.removeprefix("sha256:"))
    return hashlib.sha256(entry.encode()).digest()


def _bearer_value(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()
