"""The gate every model route passes: the caller identified (and admitted) before the body is
read, the body decoded strictly, and the services the routes share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lib.access import AccessControl, Caller, Hop
from lib.http import DecodedRequest, read_json_request
from lib.routes.api_document import ERROR_RESPONSES
from lib.routes.direct_call import direct_call
from lib.settings import Settings
from lib.upstream import UpstreamCall, UpstreamClient


@dataclass(frozen=True, slots=True)
class Services:
    """What the routes need, built once by the app factory and kept on `app.state`."""

    settings: Settings
    upstream: UpstreamClient
    access: AccessControl
    # The second upstream fallbacks may name (UPSTREAM_FALLBACK_URL), when configured.
    fallback_upstream: UpstreamClient | None = None

    def upstream_for(self, hop: Hop) -> UpstreamClient:
        """The client of the upstream that serves `hop`."""
        if hop.upstream == "fallback" and self.fallback_upstream is not None:
            return self.fallback_upstream
        return self.upstream


def services(request: Request) -> Services:
    """The app's services, for a route handling `request`."""
    return request.app.state.services


_bearer = HTTPBearer(
    auto_error=False,
    description="The proxy's client key (one of PROXY_API_KEYS), not a Hugging Face token.",
)


async def start_upstream_call(
    request: Request, caller: Caller, model: str, *, stream: bool = False
) -> UpstreamCall:
    """Begin the request's upstream call for `model`, if the caller's key may use it; the
    access log reads what it records."""
    call = UpstreamCall(request_id=request.state.request_id, model=model)
    request.state.upstream_call, request.state.stream = call, stream
    caller.check_model(model)
    return call


class GatedRoute(APIRoute):
    """A route that spends the token: the caller is identified, and a request that may reach
    the upstream (one with a body) admitted against its key's limits, before the body is read
    (after, for a chunked body, whose size admission needs); a request that fails gives its
    reservation back.

    FastAPI reads and parses a body before it solves dependencies, so a dependency alone
    would let a stranger without a key, or a key past its limit, make the proxy read (and
    hold) their upload. The body is then decoded strictly (`lib.http`), so only valid JSON
    goes upstream.
    """

    # False for a route that never reaches the upstream (minting tokens): not admitted.
    admits_requests = True

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        """FastAPI's handler, behind the key check and the strict JSON decoding."""
        handler = super().get_route_handler()
        has_body = self.body_field is not None
        admits = has_body and self.admits_requests
        call_directly = direct_call(self, require_caller) if has_body else None

        async def gated_handler(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            caller = await services(request).access.identify(authorization)
            request.state.caller, request.state.access = caller, caller.record
            request.state.response_headers = caller.response_headers
            if admits:  # an inference request: the usage ledger counts it, however it ends,
                request.state.usage_route = self.path
                caller.settle_at_response_end()  # and its write carries the settlement
            size = _declared_size(request)
            if admits and size is not None:
                await caller.admit(size)
            if has_body:
                request = await read_json_request(request)
            if admits and size is None:
                # A chunked body declares no size: it is read (within the body limit) first.
                await caller.admit(len(await request.body()))
            try:
                if isinstance(request, DecodedRequest):
                    request.state.json_body = data = await request.json()  # for traces
                    if call_directly is not None:
                        return await call_directly(request, caller, data)
                return await handler(request)
            except Exception:
                # Failed before the upstream answered (or its answer was refused): nothing
                # generated, nothing spent. A hang-up keeps its reservation: the upstream may
                # have generated the answer anyway.
                await caller.release()
                raise

        return gated_handler


def _declared_size(request: Request) -> int | None:
    """The body's size from `Content-Length` (0 without a body), or None for a chunked one."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        return int(length)
    return None if "chunked" in request.headers.get("transfer-encoding", "").lower() else 0


async def require_caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """Who is calling and what they may do; `GatedRoute` has identified them already
    (and refused a missing, unknown or expired key, or a refused token). Declares the bearer
    in the API document."""
    return request.state.caller


CallerDep = Annotated[Caller, Depends(require_caller)]


def gated_router(
    *,
    route_class: type[GatedRoute] = GatedRoute,
    responses: dict[int | str, dict[str, Any]] | None = None,
    **options: Any,
) -> APIRouter:
    """A router whose every route is gated, and documents the bearer and the error answers."""
    return APIRouter(
        route_class=route_class,
        dependencies=[Depends(require_caller)],
        responses=ERROR_RESPONSES if responses is None else responses,
        **options,
    )
