"""One caller's keys in one Redis Cluster slot: a real 3-node `redis-server --cluster-enabled
yes` on loopback. promptgate's connection speaks to one node (it follows no MOVED), so the app
is pointed at the node that owns the caller's hash tag; that every admission, settlement and
ledger write of a key and its token users then runs there, none refused as CROSSSLOT, is what
lets a cluster serve them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.app import create_app
from tests.conftest import AUTH, CANARY_KEY, chat_completion, make_settings, sha256_hex
from tests.redis_server import RedisServer, run_redis_cluster
from tests.secret_audit import audited

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}
ADMIN_KEY = "pg_test_canary_admin_cluster"
TOKEN_SECRET = "pg_test_canary_token_secret_cluster_0123456789"


POLICY = f"""
[keys.app]
sha256 = "{sha256_hex(CANARY_KEY)}"
rpm = 5
daily_tokens = 100000

[admins.ops]
sha256 = "{sha256_hex(ADMIN_KEY)}"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    with run_redis_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


def _owner_of(servers: list[RedisServer], key: str) -> RedisServer:
    """The node that serves `key`'s slot: the others answer MOVED."""
    owners = [s for s in servers if not s.command("EXISTS", key).startswith("-MOVED")]
    assert len(owners) == 1
    return owners[0]


def test_a_key_and_its_token_users_are_counted_within_one_slot(
    upstream: respx.Router, cluster: list[RedisServer]
) -> None:
    upstream.post(CHAT).respond(200, json=chat_completion())
    node = _owner_of(cluster, "promptgate:{app}:m:0")
    settings = make_settings(
        keys_toml=POLICY,
        redis_url=node.url,
        token_secret=TOKEN_SECRET,
        limits_on_store_error="closed",  # a CROSSSLOT refusal would be a 503, not hidden
        limits_store_timeout_s=2.0,
    )
    app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
    with TestClient(audited(app), raise_server_exceptions=False) as client:
        minted = client.post("/v1/tokens", json={"user": "alice", "rpm": 2}, headers=AUTH)
        token = {"Authorization": f"Bearer {minted.json()['token']}"}
        statuses = [client.post(CHAT, json=HELLO, headers=token).status_code for _ in range(3)]
        statuses += [client.post(CHAT, json=HELLO, headers=AUTH).status_code for _ in range(4)]
        report = client.get(
            "/api/usage",
            params={"key": "app", "group_by": "user"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
    # The user's rpm (2) refuses their third; the key's (5) refuses its own sixth request.
    assert statuses == [200, 200, 429, 200, 200, 200, 429]
    assert report.status_code == 200
    assert [(g["group"], g["requests"]) for g in report.json()["groups"]] == [("alice", 3)]
    assert report.json()["totals"]["requests"] == 7
    written = [line for line in node.command("KEYS", "*").split("\r\n") if "{app}" in line]
    assert any(":user:" in k for k in written) and any(":usage:" in k for k in written)
