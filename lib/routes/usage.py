"""`GET /api/usage`: the usage ledger for the owner (admin keys only), as JSON or CSV; and the
hook that adds every finished inference request to the ledger."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lib.access import (
    AccessRecord,
    AdminKey,
    Bucket,
    Group,
    GroupBy,
    Ledger,
    Tally,
    UsageEntry,
    UsageReport,
    build_usage_report,
    hour_of,
)
from lib.errors import InvalidFieldError
from lib.http import ResponseEndHook
from lib.routes.api_document import ERROR_RESPONSES
from lib.routes.gate import services
from lib.schemas import UsageReportBody

_DEFAULT_DAYS = 7
# A key's name (policy.py), or the reserved names of anonymous and signed-in callers.
_KEY_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CSV_COLUMNS = (
    "start",
    "group",
    "key",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "refused",
    "limited",
    "failed",
    "latency_ms_mean",
    "cache_hits",
    "tokens_saved",
)
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminKey",
    description="An admin key (ADMIN_API_KEYS): reads usage, calls no model.",
)

usage_router = APIRouter(responses=ERROR_RESPONSES)


def usage_recorder(ledger: Ledger) -> ResponseEndHook:
    """The hook that adds each finished inference request (a gated route that reaches the
    model, its caller identified) to `ledger`."""

    async def record(state: dict[str, Any], status: int, latency_s: float) -> None:
        route, access = state.get("usage_route"), state.get("access")
        if route is None or access is None:
            return
        call = state.get("upstream_call")
        entry = UsageEntry(
            key=access.key,
            route=route,
            status=status,
            latency_ms=latency_s * 1000,
            user=access.user,
            model=call.model if call is not None else None,
            prompt_tokens=access.prompt_tokens or 0,
            completion_tokens=access.completion_tokens or 0,
            cache_hit=access.cache == "hit",
            saved_tokens=access.saved_tokens,
        )
        caller = state.get("caller")
        await ledger.record(entry, caller.take_settlement() if caller is not None else None)

    return record


def require_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_admin_bearer)],
) -> AdminKey:
    """The admin key the request carries (401 none or unknown, 403 a client key or token)."""
    admin = services(request).access.identify_admin(request.headers.get("authorization"))
    request.state.access = AccessRecord(f"admin:{admin.name}")
    return admin


@usage_router.get(
    "/api/usage",
    tags=["Usage"],
    summary="Who spent what (admin keys only)",
    response_model=UsageReportBody,
    responses={200: {"content": {"text/csv": {"example": ",".join(_CSV_COLUMNS) + "\n"}}}},
)
async def read_usage(
    request: Request,
    _admin: Annotated[AdminKey, Depends(require_admin)],
    from_: Annotated[
        str | None,
        Query(alias="from", description="ISO 8601 date or instant, UTC; default: 7 days ago."),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="ISO 8601 date (that whole day) or instant, UTC; default: now."),
    ] = None,
    group_by: Annotated[GroupBy, Query(description="key, user, model or route.")] = "key",
    key: Annotated[str | None, Query(description="Only this key (a name).")] = None,
    bucket: Annotated[Bucket | None, Query(description="Default: hour up to 2 days.")] = None,
) -> Response:
    """Requests, tokens, errors and latency per hour or UTC day, by key, user, model or route,
    with totals and the top spenders. `Accept: text/csv` answers the series as CSV. Counts
    are kept `USAGE_RETENTION_DAYS` (default 35); keys no longer configured are read by
    naming them in `key`."""
    access = services(request).access
    now = access.ledger.clock()
    last_hour = _to_hour(to, now)
    # Nothing older than the retention is held: the range starts there at the earliest.
    first_hour = max(_from_hour(from_, last_hour), hour_of(now) - access.ledger.retention_days * 24)
    if key is not None and not _KEY_NAME.match(key):
        raise InvalidFieldError("A key name is 1-64 of A-Z a-z 0-9 . _ : -.", param="key")
    report = await build_usage_report(
        access.ledger,
        [key] if key is not None else access.ledger_keys,
        first_hour=first_hour,
        last_hour=last_hour,
        bucket=bucket or ("hour" if last_hour - first_hour < 48 else "day"),
        group_by=group_by,
    )
    headers = {"Cache-Control": "no-store"}
    if "text/csv" in request.headers.get("accept", ""):
        return Response(_csv(report), media_type="text/csv; charset=utf-8", headers=headers)
    body = _body(report, key, access.limiter.store_kind)
    return Response(
        body.model_dump_json(by_alias=True), media_type="application/json", headers=headers
    )


def _to_hour(value: str | None, now: float) -> int:
    if value is None:
        return hour_of(now)
    instant, whole_day = _parse_instant(value, "to")
    return hour_of(instant.timestamp()) + (23 if whole_day else 0)


def _from_hour(value: str | None, last_hour: int) -> int:
    if value is None:
        return last_hour - last_hour % 24 - (_DEFAULT_DAYS - 1) * 24
    first = hour_of(_parse_instant(value, "from")[0].timestamp())
    if first > last_hour:
        raise InvalidFieldError("'from' must not be after 'to'.", param="from")
    return first


def _parse_instant(value: str, param: str) -> tuple[dt.datetime, bool]:
    """The instant `value` names (UTC unless it says otherwise), and whether it was a date."""
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), True
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidFieldError(
            f"'{param}' must be an ISO 8601 date (2026-12-01) or instant (2026-12-01T10:00:00Z).",
            param=param,
        ) from None
    return (instant if instant.tzinfo else instant.replace(tzinfo=dt.UTC)), False


def _iso(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(report: UsageReport, key: str | None, store: str) -> UsageReportBody:
    last_end = report.last_hour + 1
    if report.bucket == "day":
        last_end += -last_end % 24
        first = report.first_hour - report.first_hour % 24
    else:
        first = report.first_hour
    return UsageReportBody.model_validate(
        {
            "from": _iso(first),
            "to": _iso(last_end),
            "bucket": report.bucket,
            "group_by": report.group_by,
            "key": key,
            "store": store,
            "totals": report.total.as_row(),
            "series": [
                {"start": _iso(start), "group": group.name, "key": group.key, **tally.as_row()}
                for (start, group), tally in sorted(
                    report.series.items(), key=lambda item: (item[0][0], -item[1].total_tokens)
                )
            ],
            "groups": [
                {"group": g.name, "key": g.key, "other": g.other, **t.as_row()}
                for g, t in _ranked(report.groups)
            ],
            "top_spenders": [
                {"key": g.key, "user": g.name, **t.as_row()} for g, t in report.top_spenders
            ],
        }
    )


def _ranked(groups: dict[Group, Tally]) -> list[tuple[Group, Tally]]:
    return sorted(groups.items(), key=lambda item: (-item[1].total_tokens, -item[1].requests))


def _csv(report: UsageReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for (start, group), tally in sorted(report.series.items(), key=lambda item: item[0][0]):
        row = tally.as_row()
        writer.writerow(
            [_iso(start), _cell(group.name), _cell(group.key)]
            + ["" if row[c] is None else row[c] for c in _CSV_COLUMNS[3:]]
        )
    return out.getvalue()


def _cell(value: str | None) -> str:
    """A text cell a spreadsheet shows as text: user ids come from callers, and one starting
    with = + - @ would otherwise run as a formula when the owner opens the file."""
    if value is None:
        return ""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
