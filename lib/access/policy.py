"""Named keys and their policies: the TOML file (`KEYS_FILE` or `KEYS_TOML`) and `PROXY_API_KEYS`.

The file holds no secret, only each key's SHA-256, so it may be committed:

    [defaults]              # every key without its own value; PROXY_API_KEYS keys get these
    rpm = 60
    [keys.mobile-app]
    sha256 = "<64 hex digits>"
    daily_tokens = 5000000
    cache_ttl_s = 600       # answers kept 10 minutes (the response cache, off by default)
    [users]                 # each user an identity provider signs in (OIDC_ISSUER)
    rpm = 10
    [admins.ops]            # may read the usage ledger (GET /api/usage), nothing else
    sha256 = "<64 hex digits>"
    [fallbacks]             # where a failing model's requests go (lib/access/fallbacks.py)
    "org/model-a" = ["org/model-b"]

A mistake stops start-up with one line naming the file and the entry, never a key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from lib.access.fallbacks import Hop, load_fallbacks
from lib.model_ids import is_model_allowed, is_valid_model_id
from lib.settings import Settings, SettingsError

_LIMIT_FIELDS = ("rpm", "tpm", "daily_tokens", "max_tokens")
_CACHE_FIELDS = ("cache_ttl_s", "cache_nondeterministic", "cache_scope")
_DEFAULT_FIELDS = frozenset({*_LIMIT_FIELDS, *_CACHE_FIELDS, "models"})
_KEY_FIELDS = frozenset({*_DEFAULT_FIELDS, "sha256", "expires"})
_KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
ANONYMOUS = "anonymous"
# The key every caller signed in by the identity provider (OIDC_ISSUER) spends.
OIDC_KEY_NAME = "oidc:users"


@dataclass(frozen=True, slots=True)
class Policy:
    """What a key may do. `None` is no limit; `models` None allows every allowed model.

    The response cache: `cache_ttl_s` None leaves it to `CACHE_TTL_S` (0: off for this key);
    `cache_forbidden` is a token's scope (`"cache": false` when minted), never the file's.
    """

    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    max_tokens: int | None = None
    models: tuple[str, ...] | None = None
    expires: dt.datetime | None = None
    cache_ttl_s: int | None = None
    cache_nondeterministic: bool = False
    cache_scope: Literal["key", "deployment"] = "key"
    cache_forbidden: bool = False

    @property
    def counted(self) -> bool:
        """True when a request on this policy must go through the limit store."""
        return self.rpm is not None or self.tpm is not None or self.daily_tokens is not None


@dataclass(frozen=True, slots=True)
class NamedKey:
    """A client key as the proxy knows it: a name for logs, its SHA-256, and its policy.

    With `user` set, it is instead one end user of a token (lib/access/token_gate.py): its
    windows in the limit store are that user's, its policy the token's or `[users]`.
    """

    name: str
    digest: bytes
    policy: Policy
    user: str | None = None


def key_hash(digest: bytes) -> str:
    """A token's `key_hash` claim: the first 16 hex digits of the SHA-256 of the key's
    `sha256` (64 lowercase hex digits, as ASCII). It changes when the key is rotated, which
    voids every token minted with the old key, and reveals nothing usable of the key."""
    return hashlib.sha256(digest.hex().encode()).hexdigest()[:16]


def key_id(digest: bytes) -> str:
    """The name of a key from `PROXY_API_KEYS`: a short id that does not reveal the key."""
    return "key-" + digest.hex()[:8]


@dataclass(frozen=True, slots=True)
class AdminKey:
    """A key that may read the usage ledger: its name (for logs) and its SHA-256."""

    name: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class Policies:
    """Everything the policy file says: the keys, `[defaults]`, `[users]` (the policy of
    each user an identity provider signs in; `[defaults]` fills what it leaves out), and the
    admin keys (`[admins]` and `ADMIN_API_KEYS`), and each model's fallbacks (`[fallbacks]`
    or `FALLBACKS`)."""

    keys: list[NamedKey]
    defaults: Policy
    users: Policy
    admins: tuple[AdminKey, ...] = ()
    fallbacks: dict[str, tuple[Hop, ...]] = dataclasses.field(default_factory=dict)


def load_keys(settings: Settings) -> tuple[list[NamedKey], Policy]:
    """Every configured key with its policy, and the `[defaults]` policy (for anonymous callers).

    Raises `SettingsError` naming the file and the entry when the policy file is wrong.
    """
    policies = load_policies(settings)
    return policies.keys, policies.defaults


def load_policies(settings: Settings) -> Policies:
    """The keys, `[defaults]` and `[users]`; raises `SettingsError` naming the file and entry."""
    source, document = _read_policy_document(settings)
    defaults = users = Policy()
    named: list[NamedKey] = []
    if document is not None:
        unknown = set(document) - {"defaults", "keys", "users", "admins", "fallbacks"}
        if unknown:
            raise SettingsError(f"{source}: unknown table [{sorted(unknown)[0]}]")
        defaults = _policy(source, "[defaults]", document.get("defaults", {}), Policy(), settings)
        users = _policy(source, "[users]", document.get("users", {}), defaults, settings)
        keys = document.get("keys", {})
        if not isinstance(keys, dict):
            raise SettingsError(f"{source}: [keys] must hold one table per key")
        for name, entry in keys.items():
            named.append(_named_key(source, name, entry, defaults, settings))
    seen = {key.digest: key.name for key in named}
    if len(seen) != len(named):
        raise SettingsError(f"{source}: two [keys] entries hold the same sha256")
    for entry in settings.proxy_api_keys:
        digest = _digest_of_entry(entry.get_secret_value())
        if digest not in seen:  # a key in both places is the named one
            seen[digest] = key_id(digest)
            named.append(NamedKey(key_id(digest), digest, defaults))
    admins = _admins(source, document.get("admins", {}) if document else {})
    for entry in settings.admin_api_keys:
        digest = _digest_of_entry(entry.get_secret_value())
        if all(admin.digest != digest for admin in admins):
            admins.append(AdminKey("admin-" + digest.hex()[:8], digest))
    fallbacks = load_fallbacks(settings, source, document.get("fallbacks") if document else None)
    return Policies(
        keys=named, defaults=defaults, users=users, admins=tuple(admins), fallbacks=fallbacks
    )


def _admins(source: str, table: Any) -> list[AdminKey]:
    if not isinstance(table, dict):
        raise SettingsError(f"{source}: [admins] must hold one table per admin key")
    admins = []
    for name, entry in table.items():
        where = f"[admins.{name}]" if _KEY_NAME.match(name) else "[admins]"
        if not _KEY_NAME.match(name):
            raise SettingsError(f"{source}: {where}: an admin name is 1-64 of A-Z a-z 0-9 . _ -")
        if not isinstance(entry, dict) or set(entry) != {"sha256"}:
            raise SettingsError(f"{source}: {where} must be a table holding only sha256")
        digest = entry["sha256"]
        if not isinstance(digest, str) or not _HEX_DIGEST.match(digest):
            raise SettingsError(f"{source}: {where}: sha256 must be 64 hex digits")
        admins.append(AdminKey(name, bytes.fromhex(digest)))
    if len({admin.digest for admin in admins}) != len(admins):
        raise SettingsError(f"{source}: two [admins] entries hold the same sha256")
    return admins


def _read_policy_document(settings: Settings) -> tuple[str, dict[str, Any] | None]:
    if settings.keys_file and settings.keys_toml:
        raise SettingsError("set KEYS_FILE or KEYS_TOML, not both")
    if settings.keys_file:
        source = f"KEYS_FILE {settings.keys_file}"
        try:
            text = Path(settings.keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{source}: cannot be read ({exc.strerror})") from None
    elif settings.keys_toml:
        source, text = "KEYS_TOML", settings.keys_toml
    else:
        return "", None
    import tomllib  # only deployments with a policy file pay for it

    try:
        return source, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names a position, never the text found there.
        raise SettingsError(f"{source}: not valid TOML: {exc}") from None


def _named_key(
    source: str, name: str, entry: Any, defaults: Policy, settings: Settings
) -> NamedKey:
    where = f"[keys.{name}]" if _KEY_NAME.match(name) else "[keys]"
    if not _KEY_NAME.match(name):
        raise SettingsError(f"{source}: {where}: a key name is 1-64 of A-Z a-z 0-9 . _ -")
    if name == ANONYMOUS:
        raise SettingsError(f"{source}: {where}: the name is reserved for callers without a key")
    if not isinstance(entry, dict):
        raise SettingsError(f"{source}: {where} must be a table")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX_DIGEST.match(digest):
        raise SettingsError(f"{source}: {where}: sha256 must be 64 hex digits")
    policy = _policy(source, where, entry, defaults, settings, allowed=_KEY_FIELDS)
    return NamedKey(name, bytes.fromhex(digest), policy)


def _policy(
    source: str,
    where: str,
    table: Any,
    base: Policy,
    settings: Settings,
    allowed: frozenset[str] = _DEFAULT_FIELDS,
) -> Policy:
    if not isinstance(table, dict):
        raise SettingsError(f"{source}: {where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SettingsError(f"{source}: {where}: unknown field {unknown[0]!r}")
    changes: dict[str, Any] = {}
    for field in _LIMIT_FIELDS:
        if field in table:
            value = table[field]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{source}: {where}: {field} must be a whole number above 0")
            changes[field] = value
    if "models" in table:
        changes["models"] = _models(source, where, table["models"], settings)
    changes.update(_cache_fields(source, where, table))
    if "expires" in table:
        changes["expires"] = _expiry(source, where, table["expires"])
    return replace(base, **changes)


def _cache_fields(source: str, where: str, table: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "cache_ttl_s" in table:
        value = table["cache_ttl_s"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2_592_000:
            raise SettingsError(
                f"{source}: {where}: cache_ttl_s must be whole seconds, 0 (off) to 2592000"
            )
        changes["cache_ttl_s"] = value
    if "cache_nondeterministic" in table:
        if not isinstance(table["cache_nondeterministic"], bool):
            raise SettingsError(f"{source}: {where}: cache_nondeterministic must be true or false")
        changes["cache_nondeterministic"] = table["cache_nondeterministic"]
    if "cache_scope" in table:
        if table["cache_scope"] not in ("key", "deployment"):
            raise SettingsError(f'{source}: {where}: cache_scope must be "key" or "deployment"')
        changes["cache_scope"] = table["cache_scope"]
    return changes


def _models(source: str, where: str, models: Any, settings: Settings) -> tuple[str, ...]:
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise SettingsError(f"{source}: {where}: models must be a list of model ids")
    for model in models:
        if not is_valid_model_id(model) or not is_model_allowed(model, settings.allowed_models):
            raise SettingsError(
                f"{source}: {where}: model {model[:100]!r} is not in ALLOWED_MODELS"
            )
    return tuple(models)


def _expiry(source: str, where: str, value: Any) -> dt.datetime:
    """A TOML date means the key works through that day (UTC); a datetime, until that instant."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    raise SettingsError(f"{source}: {where}: expires must be a TOML date or datetime")


def _digest_of_entry(entry: str) -> bytes:
    """A `PROXY_API_KEYS` entry's SHA-256: `sha256:<hex>` holds it, any other entry is the key."""
    if entry.startswith("sha256:"):
        return bytes.fromhex(entry.removeprefix("sha256:"))
    return hashlib.sha256(entry.encode()).digest()
