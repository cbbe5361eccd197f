"""Model fallbacks as configured: the policy file's `[fallbacks]` table, or `FALLBACKS` (JSON).

    [fallbacks]
    "org/model-a" = ["org/model-b", "org/model-c"]
    "team/own-model" = [{ model = "org/model-b", upstream = "fallback" }]

A request for `org/model-a` that the upstream refuses with 429 or 5xx, or that fails to
connect or times out, is sent to `org/model-b`, then `org/model-c` (lib/inference/fallbacks.py
moves it; lib/access/breaker.py skips a model that keeps failing). A fallback written as a
table with `upstream = "fallback"` goes to the second upstream (`UPSTREAM_FALLBACK_URL`).
Every model named must be in `ALLOWED_MODELS`; a mistake stops start-up with one line naming
the source and the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lib.model_ids import is_model_allowed, is_valid_model_id
from lib.settings import Settings, SettingsError

# A chain longer than this would spend the request's deadline on failures, not answers.
MAX_FALLBACKS = 4


@dataclass(frozen=True, slots=True)
class Hop:
    """One model of a request's chain, and the upstream that serves it: `main` (`HF_BASE_URL`)
    or `fallback` (`UPSTREAM_FALLBACK_URL`)."""

    model: str
    upstream: Literal["main", "fallback"] = "main"

    @property
    def name(self) -> str:
        """The hop as the breaker counts it: the model, marked when on the second upstream
        (with a `>`, which no model id holds)."""
        return self.model if self.upstream == "main" else f"fallback>{self.model}"


def load_fallbacks(
    settings: Settings, source: str, table: Any | None
) -> dict[str, tuple[Hop, ...]]:
    """The fallbacks of each model, from the policy file's `[fallbacks]` (`table`, read from
    `source`) or `FALLBACKS`; raises `SettingsError` for a bad entry, or for both set."""
    if table is not None and settings.fallbacks:
        raise SettingsError(f"set FALLBACKS or {source}'s [fallbacks], not both")
    if table is None:
        source, table = "FALLBACKS", settings.fallbacks
    if not isinstance(table, Mapping):
        raise SettingsError(f"{source}: [fallbacks] must map model ids to lists of model ids")
    return {model: _chain(source, model, fallbacks, settings) for model, fallbacks in table.items()}


def _chain(source: str, model: Any, fallbacks: Any, settings: Settings) -> tuple[Hop, ...]:
    where = f"{source}: [fallbacks] {str(model)[:100]!r}"
    _check_model(where, model, settings)
    if not isinstance(fallbacks, list) or not fallbacks:
        raise SettingsError(f"{where} must be a list of model ids")
    if len(fallbacks) > MAX_FALLBACKS:
        raise SettingsError(f"{where}: at most {MAX_FALLBACKS} fallbacks per model")
    hops = tuple(_hop(where, entry, settings) for entry in fallbacks)
    folded = [hop.name.casefold() for hop in (Hop(model), *hops)]
    if len(set(folded)) != len(folded):
        raise SettingsError(f"{where}: a model appears twice in its chain")
    return hops


def _hop(where: str, entry: Any, settings: Settings) -> Hop:
    """A fallback: a model id (this upstream), or `{model = "...", upstream = "fallback"}`."""
    if isinstance(entry, str):
        _check_model(where, entry, settings)
        return Hop(entry)
    if not isinstance(entry, Mapping) or set(entry) != {"model", "upstream"}:
        raise SettingsError(
            f'{where}: a fallback is a model id or {{model = "...", upstream = "fallback"}}'
        )
    if entry["upstream"] != "fallback":
        raise SettingsError(f'{where}: upstream must be "fallback" (UPSTREAM_FALLBACK_URL)')
    if settings.upstream_fallback_url is None:
        raise SettingsError(
            f"{where}: names the fallback upstream, but UPSTREAM_FALLBACK_URL is unset"
        )
    _check_model(where, entry["model"], settings)
    return Hop(entry["model"], "fallback")


def _check_model(where: str, model: Any, settings: Settings) -> None:
    if not isinstance(model, str) or not is_valid_model_id(model):
        raise SettingsError(f"{where}: {str(model)[:100]!r} is not a Hub model id")
    if not is_model_allowed(model, settings.allowed_models):
        raise SettingsError(f"{where}: model {model[:100]!r} is not in ALLOWED_MODELS")
