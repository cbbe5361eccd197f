"""`POST /v1/tokens`: trade a client key for a short-lived token naming one end user."""

from __future__ import annotations

from fastapi import Request, Response

from lib.routes.gate import CallerDep, GatedRoute, gated_router, services
from lib.schemas import TokenLimits, TokenRequest, TokenResponse


class MintRoute(GatedRoute):
    """Identified before the body is read, like every gated route, but not admitted: minting
    reaches no model, so it spends none of the key's requests per minute."""

    admits_requests = False


token_router = gated_router(route_class=MintRoute)


@token_router.post(
    "/v1/tokens",
    tags=["Tokens"],
    summary="Mint a short-lived token for one end user",
    response_model=TokenResponse,
)
async def create_token(
    body: TokenRequest, request: Request, response: Response, caller: CallerDep
) -> TokenResponse:
    """Authenticated by a client key, never a token. The token can only narrow the key:
    models within its models, limits at most its limits, a life at most `TOKEN_MAX_TTL_S`
    and never past the key's `expires`; asking for more is a 400 naming the field."""
    # Imported here, at the first mint: a cold start that mints nothing skips the token rules.
    from lib.access import TokenAsk

    ask = TokenAsk(
        user=body.user,
        ttl_s=body.ttl_s,
        models=tuple(body.models) if body.models is not None else None,
        rpm=body.rpm,
        tpm=body.tpm,
        daily_tokens=body.daily_tokens,
        cache=body.cache,
    )
    token, grant = services(request).access.mint(caller, ask)
    caller.record.user = grant.user  # the log line says whom the key minted for
    response.headers["Cache-Control"] = "no-store"  # a credential: no cache may keep it
    return TokenResponse(
        token=token,
        expires_at=grant.expires_at,
        user=grant.user,
        models=list(grant.models or ()),
        limits=TokenLimits(**grant.limits),
        cache=grant.cache,
    )
