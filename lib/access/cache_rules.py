"""Which callers' answers the response cache keeps, for how long, and where (their scope).

A caller's rule comes from its policy (a token's user's `[users]` policy first, when it sets
`cache_ttl_s`; else the key's, `[defaults]` filled in), else `CACHE_TTL_S`; 0 is off. A
token minted with `"cache": false` is never cached, whatever the key says.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.access.policy import NamedKey
from lib.access.stores import store_key

# The hash tag of entries every `cache_scope = "deployment"` key shares: no key name holds
# "~" (policy.py), so it is no key's tag.
DEPLOYMENT_TAG = "~cache"


@dataclass(frozen=True, slots=True)
class CacheRule:
    """How one caller's answers are cached: their life, whether sampled answers (temperature
    above 0 without a seed) may be, and the store key prefix of its entries (its scope)."""

    ttl_s: int
    nondeterministic: bool
    namespace: str


def cache_rule(
    key: NamedKey, user: NamedKey | None, *, default_ttl_s: int, prefix: str
) -> CacheRule | None:
    """The rule for a caller spending `key` (as `user`, for a token), or None: not cached."""
    if user is not None and user.policy.cache_forbidden:
        return None
    policy = key.policy
    if user is not None and user.policy.cache_ttl_s is not None:
        policy = user.policy
    ttl_s = policy.cache_ttl_s if policy.cache_ttl_s is not None else default_ttl_s
    if ttl_s <= 0:
        return None
    if policy.cache_scope == "deployment":
        namespace = f"{prefix}{{{DEPLOYMENT_TAG}}}:cache:"
    else:
        # Under the key's hash tag, like its windows and ledger (stores.store_key).
        namespace = f"{store_key(prefix, key.name)}:cache:"
    return CacheRule(ttl_s, policy.cache_nondeterministic, namespace)
