"""Hub model ids: what a valid one looks like, and which ones this deployment allows."""

from __future__ import annotations

import re
from collections.abc import Sequence

# One part of a Hub id (huggingface_hub utils/_validators.py): 1-96 characters of
# [A-Za-z0-9_.-], starting and ending with a letter, digit or underscore.
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
# The router's policy or provider suffix: `:fastest`, `:cheapest`, `:groq`, ...
_SUFFIX = r"[a-z0-9][a-z0-9-]{0,63}"
MODEL_ID_PATTERN = rf"^(?:{_PART}/)?{_PART}(?::{_SUFFIX})?$"
_MODEL_ID = re.compile(MODEL_ID_PATTERN)

# huggingface_hub's InferenceClient sends this when given a base_url and no model.
PLACEHOLDER_MODEL = "dummy"


def is_valid_model_id(model: str) -> bool:
    """True when `model` is `name` or `org/name`, optionally with a `:provider` suffix."""
    if not _MODEL_ID.fullmatch(model):
        return False
    repo_id = model.split(":", 1)[0]
    return "--" not in repo_id and ".." not in repo_id and not repo_id.endswith(".git")


def is_model_allowed(model: str, allowed: Sequence[str]) -> bool:
    """True when the allowlist names `model`.

    An entry without a suffix allows that model through any provider suffix; an entry
    with a suffix allows that exact pairing only. `*` allows every valid id.
    Repository ids compare case-insensitively, as the Hub resolves them.
    """
    repo_id, _, suffix = model.partition(":")
    for entry in allowed:
        if entry == "*":
            return True
        entry_repo, _, entry_suffix = entry.partition(":")
        if entry_repo.casefold() != repo_id.casefold():
            continue
        if not entry_suffix or entry_suffix == suffix:
            return True
    return False
