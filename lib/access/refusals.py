"""What a limited response says: OpenAI's `x-ratelimit-*` headers, and the 429 of a refusal.

Windows are the limiter's: each clock minute, and each UTC day.
"""

from __future__ import annotations

import math

from lib.access.policy import NamedKey
from lib.access.stores import AccountCounts, Counts, Verdict, Windows
from lib.errors import ProxyError, QuotaExceededError, RateLimitExceededError

MINUTE_S = 60
DAY_S = 86_400
# Every header a limited response may carry (CORS exposes them to browsers).
RATE_LIMIT_HEADERS = (
    *(
        f"x-ratelimit-{part}-{unit}"
        for unit in ("requests", "tokens")
        for part in ("limit", "remaining", "reset")
    ),
    "x-should-retry",
)


def resets_in(now: float, window_s: int) -> int:
    """Whole seconds (at least 1) until the window of `window_s` that holds `now` ends."""
    return max(math.ceil(window_s - now % window_s), 1)


def _duration(seconds: int) -> str:
    """OpenAI's reset format: `12s`, `6m0s`, `17h3m20s`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(key: NamedKey, counts: AccountCounts, windows: Windows) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the limits `key` has (tokens: per minute, else day)."""
    policy = key.policy
    headers: dict[str, str] = {}
    minute_reset = _duration(resets_in(windows.now, MINUTE_S))
    if policy.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(policy.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(policy.rpm - counts.requests, 0))
        headers["x-ratelimit-reset-requests"] = minute_reset
    if policy.tpm is not None:
        token_limit, used, reset = policy.tpm, counts.minute_tokens, minute_reset
    elif policy.daily_tokens is not None:
        token_limit, used = policy.daily_tokens, counts.day_tokens
        reset = _duration(resets_in(windows.now, DAY_S))
    else:
        return headers
    headers["x-ratelimit-limit-tokens"] = str(token_limit)
    headers["x-ratelimit-remaining-tokens"] = str(max(token_limit - used, 0))
    headers["x-ratelimit-reset-tokens"] = reset
    return headers


def refusal(
    key: NamedKey | None,
    verdict: Verdict,
    windows: Windows,
    headers: dict[str, str],
    reserve: int,
    counts: Counts,
) -> ProxyError:
    """The 429 for `verdict`; `key` is the holder refused, None for the deployment's day."""
    if key is None:
        wait = resets_in(windows.now, DAY_S)
        limit, used = windows.global_daily_tokens, counts.global_day_tokens
        message = "This deployment has used its daily token budget"
        if used < limit:
            message = "This deployment's daily token budget cannot fit this request"
        return QuotaExceededError(
            f"{message}{_reserve_note(reserve, limit, used)}; the budget resets at 00:00 UTC, "
            f"in {_duration(wait)}.",
            headers={**headers, "Retry-After": str(wait)},  # and x-should-retry: false
        )
    policy = key.policy
    held = counts.accounts[counts.refused]
    who = f"user '{key.user[:64]}'" if key.user is not None else f"key '{key.name}'"
    if verdict in (Verdict.RPM, Verdict.TPM):
        wait = resets_in(windows.now, MINUTE_S)
        if verdict is Verdict.RPM:
            what = f"{policy.rpm} requests per minute"
        else:
            note = _reserve_note(reserve, policy.tpm or 0, held.minute_tokens)
            what = f"{policy.tpm} tokens per minute{note}"
        return RateLimitExceededError(
            f"Rate limit reached for {who}: {what}. Try again in {wait} s.",
            headers={**headers, "Retry-After": str(wait)},
        )
    wait = resets_in(windows.now, DAY_S)
    note = _reserve_note(reserve, policy.daily_tokens or 0, held.day_tokens)
    spent = "cannot fit this request in" if note else "has used"
    message = f"{who[0].upper()}{who[1:]} {spent} its {policy.daily_tokens} tokens for today"
    return QuotaExceededError(
        f"{message}{note}; the budget resets at 00:00 UTC, in {_duration(wait)}.",
        headers={**headers, "Retry-After": str(wait)},  # and x-should-retry: false
    )


def _reserve_note(reserve: int, limit: int, used: int) -> str:
    """Why a limit not yet spent refused: this request's worst case does not fit."""
    if used >= limit:
        return ""
    return (
        f" (this request may use up to {reserve} tokens: its size in bytes / 4, plus the "
        f"max_tokens cap; {limit - used} are left)"
    )


REFUSED_BY = {
    Verdict.RPM: "rpm",
    Verdict.TPM: "tpm",
    Verdict.DAILY_TOKENS: "daily_tokens",
    Verdict.GLOBAL_DAILY_TOKENS: "global_daily_tokens",
}
