"""The service's own routes: `GET /api/limits` (what the caller has left) and
`GET /api/health` (needs no key)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request

from lib import __version__
from lib.access import NamedKey, nearest_limit
from lib.routes.gate import CallerDep, gated_router, services
from lib.schemas import Health, KeyPolicy, LimitsRemaining, LimitsReport

limits_router = gated_router()
health_router = APIRouter()


@limits_router.get("/api/limits", tags=["Service"], summary="The caller's limits")
async def limits(request: Request, caller: CallerDep) -> LimitsReport:
    """The caller's key name, its policy, and what it has left this minute and today; for a
    token's holder, the token's user with their own limits first, then the key's (which
    apply too), and which of the two is nearer to refusing."""
    limiter = services(request).access.limiter
    holders = [h for h in (caller.user, caller.key) if h is not None]
    remaining = await limiter.remaining(holders)
    nearest = nearest_limit(list(zip(holders, remaining, strict=True)), caller.completion_cap)
    first = holders[0]
    report = LimitsReport(
        key=caller.name,
        user=first.user,
        policy=_policy_of(first),
        remaining=LimitsRemaining(**dataclasses.asdict(remaining[0])),
        nearest_limit=None if nearest is None else ("user" if nearest.user else "key"),
        limits_store=limiter.store_kind,
    )
    if caller.user is not None:
        report.key_policy = _policy_of(caller.key)
        report.key_remaining = LimitsRemaining(**dataclasses.asdict(remaining[1]))
    return report


def _policy_of(holder: NamedKey) -> KeyPolicy:
    policy = holder.policy
    return KeyPolicy(
        rpm=policy.rpm,
        tpm=policy.tpm,
        daily_tokens=policy.daily_tokens,
        max_tokens=policy.max_tokens,
        models=list(policy.models) if policy.models is not None else None,
        expires=policy.expires.isoformat() if policy.expires else None,
    )


@health_router.get("/api/health", tags=["Service"], summary="Health and configuration")
async def health(request: Request) -> Health:
    """Needs no key and calls nothing upstream; reports configuration as booleans only, and
    whether the limit store answers (bounded: a fraction of a second)."""
    settings, access = services(request).settings, services(request).access
    return Health(
        version=__version__,
        token_configured=settings.hf_token is not None,
        keys_configured=access.keys.configured,
        anonymous_allowed=access.keys.allow_anonymous,
        limits_store=access.limiter.store_kind,
        limits_store_reachable=await access.limiter.store_answers(),
    )
