"""Configuration, read once per process from the environment and an optional `.env`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lib.model_ids import is_valid_model_id

DEFAULT_HF_BASE_URL = "https://router.huggingface.co"
# A small instruct model that Hugging Face's own hf-inference provider serves.
DEFAULT_CHAT_MODEL = "HuggingFaceTB/SmolLM3-3B"
# A small sentence embedding model (384 dimensions) that hf-inference serves.
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

CommaList = Annotated[list[str], NoDecode]
MIN_TOKEN_SECRET_CHARS = 32
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_https_or_loopback(url: str) -> bool:
    """True for an https URL, or plain http to a loopback host (a provider run for tests or dev)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable, never its value."""


class Settings(BaseSettings):
    """Every setting promptgate reads. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    hf_token: SecretStr | None = None
    hf_base_url: str = DEFAULT_HF_BASE_URL
    # What HF_BASE_URL speaks: Hugging Face's router (chat, feature extraction, task routes),
    # or any OpenAI-compatible server (chat and /v1/embeddings only; HF_TOKEN optional).
    upstream_api: Literal["hf-router", "openai"] = "hf-router"
    # A second OpenAI-compatible upstream that fallbacks may name (UPSTREAM_API=openai only),
    # with its own token: a team's own server and the router can stand in for each other.
    upstream_fallback_url: str | None = None
    upstream_fallback_token: SecretStr | None = None
    default_model: str = DEFAULT_CHAT_MODEL
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    allowed_models: CommaList = Field(default_factory=list)
    proxy_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    allow_anonymous: bool = False
    request_timeout_s: float = Field(default=50.0, gt=0, le=900)
    stream_idle_timeout_s: float = Field(default=30.0, gt=0, le=900)
    upstream_max_attempts: int = Field(default=3, ge=1, le=10)
    # httpx's own pool for serverless cold starts; the container image picks aiohttp.
    upstream_transport: Literal["builtin", "httpx", "aiohttp"] = "builtin"
    # Vercel refuses request bodies over 4.5 MB itself; Lambda (6 MB) and containers allow more.
    # Texts per upstream feature-extraction call; larger requests are split into batches.
    # 32 is what text-embeddings-inference, behind Hugging Face's embedding models, accepts
    # by default (its MAX_CLIENT_BATCH_SIZE).
    embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    max_body_bytes: int = Field(default=4_500_000, ge=1024, le=4_500_000)
    # The whole request body must arrive within this many seconds of the request's start.
    body_timeout_s: float = Field(default=15.0, gt=0, le=300)
    cors_origins: CommaList = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    _allowlist_defaulted: bool = PrivateAttr(default=False)
    # AWS Lambda only: a path prefix API Gateway leaves in the path (a named stage, "/prod").
    api_gateway_base_path: str = Field(default="/", pattern=r"^/[A-Za-z0-9._~/-]*$")
    # Named keys and their limits (lib/access/policy.py): a TOML file, or its text.
    keys_file: str | None = None
    keys_toml: str | None = None
    global_daily_tokens: int | None = Field(default=None, ge=1)
    # The shared limit store; KV_URL is the name Vercel's Upstash integration sets.
    redis_url: SecretStr | None = None
    kv_url: SecretStr | None = None
    # A Redis Cluster behind REDIS_URL (one of its nodes): commands go to their slot's node.
    redis_cluster: bool = False
    limits_on_store_error: Literal["local", "closed"] = "local"
    limits_store_timeout_s: float = Field(default=0.25, gt=0, le=5)
    # Every key promptgate writes in Redis starts with it, so deployments can share one Redis.
    # No braces: they would end the hash tag each caller's keys share.
    redis_key_prefix: str = Field(default="promptgate:", pattern=r"^[A-Za-z0-9:._-]{0,64}$")
    # The usage ledger (lib/access/usage.py): hour buckets kept this long; users kept by name.
    usage_retention_days: int = Field(default=35, ge=1, le=400)
    usage_max_users_per_key: int = Field(default=1000, ge=1, le=1_000_000)
    # The response cache (lib/access/response_cache.py): off (0) unless this or a policy's
    # cache_ttl_s sets a life; entries live in the limit store, or in a bounded LRU here.
    cache_ttl_s: int = Field(default=0, ge=0, le=30 * 86_400)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, le=16 * 1024**3)
    cache_max_entry_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Keys that may read the ledger (GET /api/usage) and nothing else: sha256:<hex> entries.
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # OpenTelemetry traces (lib/tracing.py), under the standard variables' names: on when an
    # endpoint is set. The traces endpoint is used as is; the other gets /v1/traces added.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str = "promptgate"
    otel_capture_content: bool = False
    # Short-lived tokens for browser apps (lib/access/tokens.py): on when TOKEN_SECRET is set.
    token_secret: SecretStr | None = None
    token_secret_previous: SecretStr | None = None
    token_max_ttl_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    # The app's identity provider (lib/access/identity.py): on when OIDC_ISSUER is set.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    # Model fallbacks (lib/access/fallbacks.py): JSON {"org/a": ["org/b", ...]}, or the
    # policy file's [fallbacks]; a model that failed this many times in a row is skipped
    # for the cooldown; a model with a fallback after it has this long to start answering.
    fallbacks: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    fallback_breaker_failures: int = Field(default=3, ge=1, le=1000)
    fallback_breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3600)
    fallback_timeout_s: float = Field(default=20.0, gt=0, le=900)

    @field_validator(
        "hf_token",
        "upstream_fallback_url",
        "upstream_fallback_token",
        "redis_url",
        "kv_url",
        "keys_file",
        "keys_toml",
        "global_daily_tokens",
        "token_secret",
        "token_secret_previous",
        "oidc_issuer",
        "oidc_audience",
        "oidc_jwks_url",
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator(
        "allowed_models", "cors_origins", "proxy_api_keys", "admin_api_keys", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _decode_fallbacks(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except ValueError:
                # Never the text: a JSON error's position is enough to find the mistake.
                raise ValueError(
                    'must be a JSON object such as {"org/model-a": ["org/model-b"]}'
                ) from None
        return value

    @field_validator("hf_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("upstream_fallback_url")
    @classmethod
    def _check_fallback_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("upstream_api") != "openai":
            raise ValueError("is only used with UPSTREAM_API=openai")
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("upstream_fallback_token")
    @classmethod
    def _fallback_token_needs_url(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is not None and info.data.get("upstream_fallback_url") is None:
            raise ValueError("is only used with UPSTREAM_FALLBACK_URL set")
        return value

    @field_validator("default_model", "embedding_model")
    @classmethod
    def _check_default_model(cls, value: str) -> str:
        if not is_valid_model_id(value):
            raise ValueError("must be a Hub model id such as org/name")
        return value

    @field_validator("allowed_models")
    @classmethod
    def _check_allowed_models(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "*" and not is_valid_model_id(entry):
                raise ValueError("each entry must be a Hub model id or *")
        return value

    @field_validator("proxy_api_keys")
    @classmethod
    def _check_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            secret = key.get_secret_value()
            if secret.startswith("sha256:"):
                digest = secret.removeprefix("sha256:")
                if not _is_hex_digest(digest):
                    raise ValueError("a sha256: entry must hold 64 hex digits")
            elif len(secret) < 8:
                raise ValueError("each key must be at least 8 characters long")
        return value

    @field_validator("admin_api_keys")
    @classmethod
    def _check_admin_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            digest = key.get_secret_value().removeprefix("sha256:")
            if not key.get_secret_value().startswith("sha256:") or not _is_hex_digest(digest):
                # Never the entry itself: an owner may have pasted the key instead of its hash.
                raise ValueError(
                    "each entry must be sha256:<64 hex digits>, the key's hash (make key "
                    "prints one), never the key itself"
                )
        return value

    @field_validator("upstream_api", mode="before")
    @classmethod
    def _lower_upstream_api(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url", "kv_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("token_secret")
    @classmethod
    def _check_token_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_SECRET_CHARS} characters long")
        return value

    @field_validator("token_secret_previous")
    @classmethod
    def _check_previous_secret(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None:
            return None
        if info.data.get("token_secret") is None:
            raise ValueError("is only used with TOKEN_SECRET (the new secret) set")
        if len(value.get_secret_value()) < MIN_TOKEN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_SECRET_CHARS} characters long")
        return value

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _check_oidc_url(cls, value: str | None) -> str | None:
        if value is not None and not is_https_or_loopback(value):
            raise ValueError("must be an https:// URL (http:// only to a loopback host)")
        return value

    @field_validator("oidc_audience")
    @classmethod
    def _check_oidc_audience(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("oidc_issuer") is not None and value is None:
            raise ValueError("must be set with OIDC_ISSUER (the audience the tokens are for)")
        if info.data.get("oidc_issuer") is None and value is not None:
            raise ValueError("is only used with OIDC_ISSUER set")
        return value

    @field_validator("oidc_jwks_url")
    @classmethod
    def _jwks_url_needs_issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("oidc_issuer") is None:
            raise ValueError("is only used with OIDC_ISSUER set")
        return value

    @field_validator("redis_cluster")
    @classmethod
    def _check_redis_cluster(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url") or info.data.get("kv_url")
        if value and url is None:
            raise ValueError("is only used with REDIS_URL (or KV_URL) set")
        if value and urlsplit(url.get_secret_value()).path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only: drop the /N from its URL")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_allowlist(self) -> Settings:
        if not self.allowed_models:
            self.allowed_models = [self.default_model, self.embedding_model]
            self._allowlist_defaulted = True
        return self

    @property
    def tokens_configured(self) -> bool:
        """True when bearer tokens are accepted: the proxy's own, or an identity provider's."""
        return self.token_secret is not None or self.oidc_issuer is not None

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL (OTLP over HTTP)")
        return value

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans are sent (OTLP/HTTP), or None when tracing is off."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def limits_store_url(self) -> SecretStr | None:
        """The shared limit store's URL: `REDIS_URL`, else `KV_URL`; None for the in-process one."""
        return self.redis_url or self.kv_url

    def fallback_upstream_settings(self) -> Settings | None:
        """The second upstream's settings (`UPSTREAM_FALLBACK_URL` and its own token in place of
        `HF_BASE_URL` and `HF_TOKEN`), or None when there is none."""
        if self.upstream_fallback_url is None:
            return None
        return self.model_copy(
            update={
                "hf_base_url": self.upstream_fallback_url,
                "hf_token": self.upstream_fallback_token,
                "upstream_fallback_url": None,
                "upstream_fallback_token": None,
            }
        )

    @property
    def allowlist_defaulted(self) -> bool:
        """True when `ALLOWED_MODELS` was not set, so only the two default models are allowed."""
        return self._allowlist_defaulted


def _is_hex_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, raising `SettingsError` with one line that names the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        # The pydantic message describes the rule broken; `input` is never shown.
        reason = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {name}: {reason}") from None
