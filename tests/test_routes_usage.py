"""The usage ledger through the app: what each request adds, and `GET /api/usage` reading it,
on the in-process store and on a real Redis. Hours and days move with an injected clock."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from tests.conftest import (
    AUTH,
    CANARY_KEY,
    Clock,
    chat_completion,
    chunk,
    make_settings,
    sha256_hex,
    sse,
)
from tests.redis_server import RedisServer, run_redis_server
from tests.secret_audit import audited

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
ADMIN_KEY = "pg_test_canary_admin_4f1c"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OTHER_KEY = "pg_test_canary_key_other"
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
TOKEN_SECRET = "pg_test_canary_token_secret_0123456789abcdef"


POLICY = f"""
[keys.app]
sha256 = "{sha256_hex(CANARY_KEY)}"
rpm = 1000

[keys.other]
sha256 = "{sha256_hex(OTHER_KEY)}"
rpm = 2

[admins.ops]
sha256 = "{sha256_hex(ADMIN_KEY)}"
"""


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def usage_client(
    upstream: respx.Router, clock: Clock, store_url: str | None, **settings: Any
) -> TestClient:
    values = {
        "keys_toml": POLICY,
        "redis_url": store_url,
        "token_secret": TOKEN_SECRET,
        "limits_store_timeout_s": 2.0,
        **settings,
    }
    app = create_app(
        make_settings(**values),
        transport=httpx.MockTransport(upstream.async_handler),
        clock=clock,
    )
    return TestClient(audited(app), raise_server_exceptions=False)


def usage(client: TestClient, **query: str) -> dict[str, Any]:
    response = client.get("/api/usage", params=query, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def token_for(client: TestClient, user: str, **limits: int) -> dict[str, str]:
    minted = client.post("/v1/tokens", json={"user": user, **limits}, headers=AUTH)
    assert minted.status_code == 200, minted.text
    return {"Authorization": f"Bearer {minted.json()['token']}"}


def group(report: dict[str, Any], name: str | None) -> dict[str, Any]:
    return next(g for g in report["groups"] if g["group"] == name)


def test_each_request_adds_its_tokens_and_latency_to_its_key(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())  # 3 prompt + 2 completion
    with usage_client(upstream, clock, store_url) as client:
        for _ in range(3):
            assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        assert client.post(CHAT, json=HELLO, headers=OTHER).status_code == 200
        report = usage(client)
    assert report["store"] == ("memory" if store_url is None else "redis")
    assert report["totals"]["requests"] == 4
    assert report["totals"]["prompt_tokens"] == 12
    assert report["totals"]["completion_tokens"] == 8
    app = group(report, "app")
    assert (app["requests"], app["total_tokens"], app["key"]) == (3, 15, "app")
    assert group(report, "other")["total_tokens"] == 5
    assert [g["group"] for g in report["groups"]] == ["app", "other"]  # most tokens first
    assert app["latency_ms_mean"] > 0
    top = report["top_spenders"][0]
    assert (top["key"], top["user"], top["total_tokens"]) == ("app", None, 15)


def test_refusals_limits_and_upstream_failures_are_counted_by_class(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    route = upstream.post(CHAT)
    route.respond(200, json=chat_completion())
    with usage_client(upstream, clock, store_url) as client:
        assert client.post(CHAT, json={"messages": "no"}, headers=OTHER).status_code == 422
        assert client.post(CHAT, json=HELLO, headers=OTHER).status_code == 200
        assert client.post(CHAT, json=HELLO, headers=OTHER).status_code == 429  # rpm 2
        clock.now = T0 + 60  # a new minute
        route.respond(503, json={"error": "overloaded"})
        assert client.post(CHAT, json=HELLO, headers=OTHER).status_code >= 500
        counts = group(usage(client), "other")
    assert counts["requests"] == 4
    assert (counts["refused"], counts["limited"], counts["failed"]) == (1, 1, 1)
    assert counts["total_tokens"] == 5  # only the answered request spent any


def test_a_streamed_answer_counts_the_usage_its_last_chunk_reports(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    usage_chunk = chunk(usage={"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10})
    body = sse(chunk("Hi"), chunk(finish_reason="stop"), usage_chunk, "[DONE]")
    upstream.post(CHAT).respond(200, content=body, headers={"content-type": "text/event-stream"})
    with usage_client(upstream, clock, store_url) as client:
        streamed = client.post(CHAT, json={**HELLO, "stream": True}, headers=AUTH)
        assert streamed.status_code == 200
        assert "[DONE]" in streamed.text
        counts = group(usage(client), "app")
    assert (counts["requests"], counts["prompt_tokens"], counts["completion_tokens"]) == (1, 4, 6)


def test_group_by_model_and_route_split_a_key_s_requests(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    vectors = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]}
    upstream.post(EMBED).respond(200, json={**vectors, "model": "m", "usage": {"prompt_tokens": 2}})
    with usage_client(upstream, clock, store_url, upstream_api="openai") as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        assert client.post(EMBED, json={"input": "hi"}, headers=AUTH).status_code == 200
        assert client.post(CHAT, json={"messages": 1}, headers=AUTH).status_code == 422
        by_route = usage(client, group_by="route")
        by_model = usage(client, group_by="model")
    assert {g["group"]: g["requests"] for g in by_route["groups"]} == {CHAT: 2, EMBED: 1}
    models = {g["group"]: g["requests"] for g in by_model["groups"]}
    assert models[None] == 1  # refused before a model was chosen
    assert sum(models.values()) == 3 and len(models) == 3


def test_token_users_are_kept_by_name_up_to_the_cap_and_the_rest_summed_as_other(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with usage_client(upstream, clock, store_url, usage_max_users_per_key=2) as client:
        for user in ("alice", "bob", "carol", "dave", "alice"):
            assert client.post(CHAT, json=HELLO, headers=token_for(client, user)).status_code == 200
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200  # the key itself
        report = usage(client, group_by="user")
    users = {(g["group"], g["other"]): g["requests"] for g in report["groups"]}
    assert users == {("alice", False): 2, ("bob", False): 1, ("other", True): 2}
    assert all(g["key"] == "app" for g in report["groups"])
    spenders = {(s["key"], s["user"]): s["requests"] for s in report["top_spenders"]}
    assert spenders == {
        ("app", "alice"): 2,
        ("app", "bob"): 1,
        ("app", "other"): 2,
        ("app", None): 1,
    }


def test_a_user_id_with_separators_stays_in_its_own_fields(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    tricky = ["a|b|req", "~other", "k||req", "100%"]
    with usage_client(upstream, clock, store_url) as client:
        for user in tricky:
            assert client.post(CHAT, json=HELLO, headers=token_for(client, user)).status_code == 200
        report = usage(client, group_by="user")
        totals = group(usage(client), "app")
    assert sorted((g["group"], g["other"], g["requests"]) for g in report["groups"]) == sorted(
        (user, False, 1) for user in tricky
    )
    assert totals["requests"] == 4  # no user id added to the key's own counts


def test_hours_and_days_bucket_the_series_and_from_to_select_them(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with usage_client(upstream, clock, store_url) as client:
        for hours_later in (0, 0, 1, 30):  # 08:00, 08:00, 09:00 on the 15th; 14:00 the 16th
            clock.now = T0 + hours_later * 3600
            assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        hourly = usage(client, **{"from": "2027-01-15T08:00:00Z", "to": "2027-01-15T09:30:00Z"})
        daily = usage(client, bucket="day")
        one_day = usage(client, **{"from": "2027-01-16", "to": "2027-01-16"})
    assert hourly["bucket"] == "hour"
    assert [(p["start"], p["requests"]) for p in hourly["series"]] == [
        ("2027-01-15T08:00:00Z", 2),
        ("2027-01-15T09:00:00Z", 1),
    ]
    assert (hourly["from"], hourly["to"]) == ("2027-01-15T08:00:00Z", "2027-01-15T10:00:00Z")
    assert [(p["start"], p["requests"]) for p in daily["series"]] == [
        ("2027-01-15T00:00:00Z", 3),
        ("2027-01-16T00:00:00Z", 1),
    ]
    assert one_day["totals"]["requests"] == 1
    assert one_day["series"][0]["start"] == "2027-01-16T14:00:00Z"  # a day asked: by hour


def test_counts_older_than_the_retention_are_gone(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with usage_client(upstream, clock, store_url, usage_retention_days=2) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        clock.now = T0 + 3 * 86_400
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        report = usage(client, **{"from": "2027-01-01"})
    assert report["totals"]["requests"] == 1
    assert report["from"] >= "2027-01-16"


def test_csv_answers_the_series_and_quotes_cells_a_spreadsheet_would_run(
    upstream: respx.Router, clock: Clock, store_url: str | None
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with usage_client(upstream, clock, store_url) as client:
        token = token_for(client, "=HYPERLINK(1)")
        assert client.post(CHAT, json=HELLO, headers=token).status_code == 200
        response = client.get(
            "/api/usage", params={"group_by": "user"}, headers={**ADMIN, "Accept": "text/csv"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    assert rows[0]["group"] == "'=HYPERLINK(1)"
    assert (rows[0]["key"], rows[0]["requests"], rows[0]["total_tokens"]) == ("app", "1", "5")
    assert rows[0]["start"] == "2027-01-15T00:00:00Z"  # a week by default: by day


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2027-13-01"}, "to"),
        ({"from": "2027-01-15", "to": "2027-01-14"}, "from"),
        ({"key": "a{b}"}, "key"),
        ({"group_by": "model,key"}, "group_by"),
        ({"bucket": "week"}, "bucket"),
    ],
)
def test_a_bad_query_is_422_naming_the_parameter(
    upstream: respx.Router, clock: Clock, query: dict[str, str], param: str
) -> None:
    with usage_client(upstream, clock, None) as client:
        response = client.get("/api/usage", params=query, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param


def test_only_admin_keys_read_usage(upstream: respx.Router, clock: Clock) -> None:
    with usage_client(upstream, clock, None) as client:
        token = token_for(client, "alice")
        answers = {
            "none": client.get("/api/usage"),
            "unknown": client.get("/api/usage", headers={"Authorization": "Bearer pg_nope_1234"}),
            "client key": client.get("/api/usage", headers=AUTH),
            "token": client.get("/api/usage", headers=token),
        }
    statuses = {who: (r.status_code, r.json()["error"]["code"]) for who, r in answers.items()}
    assert statuses == {
        "none": (401, "missing_api_key"),
        "unknown": (401, "invalid_api_key"),
        "client key": (403, "admin_key_required"),
        "token": (403, "admin_key_required"),
    }


def test_an_admin_key_calls_no_model_unless_it_is_also_a_client_key(
    upstream: respx.Router, clock: Clock
) -> None:
    route = upstream.post(CHAT).respond(200, json=chat_completion())
    with usage_client(upstream, clock, None) as client:
        assert client.post(CHAT, json=HELLO, headers=ADMIN).status_code == 401
        assert client.post("/v1/tokens", json={"user": "x"}, headers=ADMIN).status_code == 401
    assert not route.calls
    both = POLICY + f'\n[keys.ops-too]\nsha256 = "{sha256_hex(ADMIN_KEY)}"\n'
    with usage_client(upstream, clock, None, keys_toml=both) as client:
        assert client.post(CHAT, json=HELLO, headers=ADMIN).status_code == 200
        assert usage(client)["totals"]["requests"] == 1


def test_without_admin_keys_the_route_says_how_to_turn_it_on(
    upstream: respx.Router, clock: Clock
) -> None:
    with usage_client(upstream, clock, None, keys_toml=POLICY.split("[admins")[0]) as client:
        response = client.get("/api/usage", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_enabled"
    assert "ADMIN_API_KEYS" in response.json()["error"]["message"]


def test_admin_api_keys_setting_takes_hashes_and_names_them(
    upstream: respx.Router, clock: Clock
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    policy = POLICY.split("[admins")[0]
    setting = f"sha256:{sha256_hex(ADMIN_KEY)}"
    with usage_client(upstream, clock, None, keys_toml=policy, admin_api_keys=setting) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        assert usage(client)["totals"]["requests"] == 1


def test_a_failing_store_never_fails_the_request_and_a_report_says_so(
    upstream: respx.Router, clock: Clock
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with run_redis_server() as server, usage_client(upstream, clock, server.url) as client:
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        server.kill()
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        read = client.get("/api/usage", headers=ADMIN)
    assert read.status_code == 503
    assert read.json()["error"]["code"] == "limit_store_unavailable"


def test_a_frozen_store_costs_a_request_no_more_than_the_bound(
    upstream: respx.Router, clock: Clock
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    with (
        run_redis_server() as server,
        usage_client(upstream, clock, server.url, limits_store_timeout_s=0.25) as client,
    ):
        assert client.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        with server.stopped():
            started = time.monotonic()
            statuses = [client.post(CHAT, json=HELLO, headers=AUTH).status_code for _ in range(3)]
            elapsed = time.monotonic() - started
    assert statuses == [200, 200, 200]
    # One bounded wait (admission finds the store frozen); then both the limits and the
    # ledger count in this process for a while, without waiting again.
    assert elapsed < 2.0


def test_every_key_written_starts_with_the_prefix_under_the_key_s_hash_tag(
    upstream: respx.Router, clock: Clock, redis_server: RedisServer
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    redis_server.flush()
    with usage_client(upstream, clock, redis_server.url, redis_key_prefix="one:") as first:
        user = token_for(first, "alice", rpm=10)  # limited: the user has windows of their own
        assert first.post(CHAT, json=HELLO, headers=user).status_code == 200
        assert first.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
    with usage_client(upstream, clock, redis_server.url, redis_key_prefix="two:") as second:
        assert usage(second)["totals"]["requests"] == 0  # another deployment's counts
        assert second.post(CHAT, json=HELLO, headers=AUTH).status_code == 200
        assert usage(second)["totals"]["requests"] == 1
    reply = redis_server.command("KEYS", "*").split("\r\n")
    keys = sorted(line for line in reply if line and line[0] not in "*$")
    assert keys and all(k.startswith(("one:{app}:", "two:{app}:")) for k in keys), keys
    assert any(":usage:" in k for k in keys) and any(":user:" in k for k in keys)


def test_the_api_document_describes_the_usage_route(upstream: respx.Router, clock: Clock) -> None:
    with usage_client(upstream, clock, None) as client:
        document = client.get("/openapi.json").json()
    operation = document["paths"]["/api/usage"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {
        "from",
        "to",
        "group_by",
        "key",
        "bucket",
    }
    assert "text/csv" in operation["responses"]["200"]["content"]
    assert {"401", "403"} <= set(operation["responses"])
    assert operation["security"] == [{"AdminKey": []}]
    schema = document["components"]["schemas"]["UsageReportBody"]
    assert {"from", "totals", "series", "groups", "top_spenders"} <= set(schema["properties"])
