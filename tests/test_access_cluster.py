"""promptgate on a Redis Cluster endpoint (`REDIS_CLUSTER=true`): a real 3-node
`redis-server --cluster-enabled yes` on loopback. Each caller's keys live in one slot (their
key's name is the hash tag) on the node that serves it; the deployment's daily cap in a slot
of its own; a slot moved while the app runs is followed (MOVED), and one being migrated
is asked for where it is going (ASK)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from lib.access.redis_cluster import RedisCluster, first_key, key_slot, slot_table
from lib.app import create_app
from tests.conftest import chat_completion, make_settings, sha256_hex
from tests.redis_server import RedisServer, run_redis_cluster
from tests.secret_audit import audited

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}
ADMIN_KEY = "pg_test_canary_admin_cluster"
TOKEN_SECRET = "pg_test_canary_token_secret_cluster_0123456789"
TOKENS_PER_CALL = chat_completion()["usage"]["total_tokens"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    with run_redis_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


@pytest.fixture
def nodes(cluster: list[RedisServer]) -> list[RedisServer]:
    """The cluster's nodes, emptied first."""
    for node in cluster:
        node.flush()
    return cluster


def _owner_of(servers: list[RedisServer], key: str) -> RedisServer:
    """The node that serves `key`'s slot: the others answer MOVED."""
    owners = [s for s in servers if not s.command("EXISTS", key).startswith("-MOVED")]
    assert len(owners) == 1
    return owners[0]


def _names_on_every_node(servers: list[RedisServer]) -> list[str]:
    """One key name per node, each name's keys (`promptgate:{name}:...`) served there."""
    names: dict[int, str] = {}
    for i in range(200):
        name = f"app{i}"
        names.setdefault(_owner_of(servers, f"promptgate:{{{name}}}").port, name)
        if len(names) == len(servers):
            return list(names.values())
    raise AssertionError("no name found for some node")


def _keys_on(node: RedisServer, pattern: str) -> list[str]:
    reply = node.command("KEYS", pattern).split("\r\n")
    return [line for line in reply if line.startswith("promptgate:")]


def _policy(names: list[str], rpm: int = 3) -> str:
    stanzas = [
        f'[keys.{name}]\nsha256 = "{sha256_hex(f"pg_test_canary_key_{name}")}"\nrpm = {rpm}\n'
        for name in names
    ]
    return "\n".join(stanzas) + f'\n[admins.ops]\nsha256 = "{sha256_hex(ADMIN_KEY)}"\n'


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer pg_test_canary_key_{name}"}


def _client(upstream: respx.Router, seed: RedisServer, **overrides: object) -> TestClient:
    upstream.post(CHAT).respond(200, json=chat_completion())
    values: dict[str, object] = {
        "redis_url": seed.url,
        "redis_cluster": True,
        "limits_on_store_error": "closed",  # a store failure is a 503 here, not hidden
        "limits_store_timeout_s": 2.0,
    }
    values.update(overrides)
    settings = make_settings(**values)
    app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
    return TestClient(audited(app), raise_server_exceptions=False)


def _global_day(nodes: list[RedisServer]) -> tuple[RedisServer, str]:
    """The deployment's day key, and the node that holds it."""
    owner = _owner_of(nodes, "promptgate:{*}:d:0")
    keys = _keys_on(owner, "promptgate:{[*]}:d:*")
    assert len(keys) == 1, keys
    return owner, keys[0]


def _eventually(check: object, within_s: float = 3.0) -> None:
    """Settlements are read in the background: wait for `check()` to hold."""
    deadline = time.monotonic() + within_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the store never reached the expected state"
        time.sleep(0.02)


def test_key_slot_agrees_with_the_servers(cluster: list[RedisServer]) -> None:
    keys = ["promptgate:{app}:m:1", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap"]
    keys += ["{}", "a{b", "plain", "promptgate:{*}:d:20000", "ü{ñ}"]
    for key in keys:
        assert cluster[0].command("CLUSTER", "KEYSLOT", key) == f":{key_slot(key)}\r\n"


def test_keys_on_every_node_are_admitted_counted_and_reported(
    upstream: respx.Router, nodes: list[RedisServer]
) -> None:
    names = _names_on_every_node(nodes)
    global_owner = _owner_of(nodes, "promptgate:{*}:d:0")
    seed = next(n for n in nodes if n is not global_owner)  # routing is needed for the cap
    policy = _policy(names)
    overrides = {
        "keys_toml": policy,
        "global_daily_tokens": 1_000_000,
        "token_secret": TOKEN_SECRET,
    }
    with _client(upstream, seed, **overrides) as client:
        minted = client.post(
            "/v1/tokens", json={"user": "alice", "rpm": 1}, headers=_auth(names[0])
        )
        token = {"Authorization": f"Bearer {minted.json()['token']}"}
        by_token = [client.post(CHAT, json=HELLO, headers=token).status_code for _ in range(2)]
        statuses = {
            name: [client.post(CHAT, json=HELLO, headers=_auth(name)).status_code for _ in range(4)]
            for name in names
        }
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        report = client.get("/api/usage", headers=admin)
        users = client.get(
            "/api/usage", params={"key": names[0], "group_by": "user"}, headers=admin
        )
    # The token's user (rpm 1) is refused its second request, its key (rpm 3, one spent by
    # the user) its third; each other key its fourth, on whichever node holds it.
    assert by_token == [200, 429]
    assert statuses[names[0]] == [200, 200, 429, 429]
    assert {name: statuses[name] for name in names[1:]} == {
        n: [200, 200, 200, 429] for n in names[1:]
    }
    assert report.status_code == 200, report.text
    groups = {g["group"]: g["requests"] for g in report.json()["groups"]}
    assert groups == {names[0]: 6, **dict.fromkeys(names[1:], 4)}
    assert [(g["group"], g["requests"]) for g in users.json()["groups"]] == [("alice", 2)]
    for name in names:
        owner = _owner_of(nodes, f"promptgate:{{{name}}}")
        written = _keys_on(owner, f"promptgate:{{{name}}}:*")
        assert any(":m:" in k for k in written) and any(":usage:" in k for k in written)
    # The cap's day holds the tokens of the nine answered calls: the refused ones gave their
    # reserve back, the answered ones settled it to what they used.
    owner, day = _global_day(nodes)
    expected = f"${len(str(9 * TOKENS_PER_CALL))}\r\n{9 * TOKENS_PER_CALL}\r\n"
    _eventually(lambda: owner.command("GET", day) == expected)


def test_a_spent_deployment_day_refuses_on_its_own_node_and_counts_nothing(
    upstream: respx.Router, nodes: list[RedisServer]
) -> None:
    (name,) = _names_on_every_node(nodes)[:1]
    with _client(
        upstream, nodes[0], keys_toml=_policy([name], rpm=100), global_daily_tokens=100_000
    ) as client:
        assert client.post(CHAT, json=HELLO, headers=_auth(name)).status_code == 200
        owner, day = _global_day(nodes)
        _eventually(lambda: owner.command("GET", day).endswith(f"\r\n{TOKENS_PER_CALL}\r\n"))
        assert owner.command("SET", day, "100000") == "+OK\r\n"
        refused = client.post(CHAT, json=HELLO, headers=_auth(name))
        limits = client.get("/api/limits", headers=_auth(name)).json()
    assert refused.status_code == 429
    assert "This deployment has used its daily token budget" in refused.json()["error"]["message"]
    # The key's minute counted the first request only: the refusal held nothing there.
    assert limits["remaining"]["requests_this_minute"] == 99, limits
    assert limits["remaining"]["deployment_tokens_today"] == 0


def _node_id(node: RedisServer) -> str:
    return node.command("CLUSTER", "MYID").split("\r\n")[1]


def _move_slot(slot: int, source: RedisServer, target: RedisServer, nodes: list[RedisServer]):
    """Migrate `slot` with its keys from `source` to `target`, as `redis-cli --cluster
    reshard` does."""
    assert target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", _node_id(source))[0] == "+"
    assert source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", _node_id(target))[0] == "+"
    keys = source.command("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split("\r\n")
    names = [k for k in keys if k.startswith("promptgate:")]
    if names:
        migrate = ["MIGRATE", "127.0.0.1", str(target.port), '""', "0", "5000", "KEYS", *names]
        assert source.command(*migrate) == "+OK\r\n"
    for node in nodes:
        assert node.command("CLUSTER", "SETSLOT", str(slot), "NODE", _node_id(target))[0] == "+"


def test_a_slot_moved_while_serving_is_followed_with_its_counts(
    upstream: respx.Router, nodes: list[RedisServer]
) -> None:
    (name,) = _names_on_every_node(nodes)[:1]
    tag = f"promptgate:{{{name}}}"
    source = _owner_of(nodes, tag)
    target = next(n for n in nodes if n is not source)
    try:
        with _client(upstream, nodes[0], keys_toml=_policy([name])) as client:
            first = [client.post(CHAT, json=HELLO, headers=_auth(name)).status_code]
            _move_slot(key_slot(tag), source, target, nodes)
            # The app's map still names the old node: it answers MOVED, the app follows.
            rest = [
                client.post(CHAT, json=HELLO, headers=_auth(name)).status_code for _ in range(3)
            ]
            report = client.get(
                "/api/usage", params={"key": name}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
        # The minute's count moved with the slot: the fourth request is the one refused.
        assert first + rest == [200, 200, 200, 429]
        assert report.json()["totals"]["requests"] == 4
        assert _keys_on(source, f"{tag}:*") == [] and _keys_on(target, f"{tag}:m:*")
    finally:
        _move_slot(key_slot(tag), target, source, nodes)


def _start_migration(slot: int, source: RedisServer, target: RedisServer) -> None:
    assert target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", _node_id(source))[0] == "+"
    assert source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", _node_id(target))[0] == "+"


def _end_migration(slot: int, target: RedisServer, nodes: list[RedisServer]) -> None:
    for node in nodes:
        assert node.command("CLUSTER", "SETSLOT", str(slot), "NODE", _node_id(target))[0] == "+"


def test_a_key_of_a_slot_being_migrated_is_asked_for_on_its_new_node(
    nodes: list[RedisServer],
) -> None:
    tag = "promptgate:{asked}"
    source = _owner_of(nodes, tag)
    target = next(n for n in nodes if n is not source)

    async def scenario() -> list[object]:
        connection = RedisCluster(nodes[0].url)
        try:
            replies = [await connection.execute("SET", f"{tag}:old", "1")]
            _start_migration(key_slot(tag), source, target)
            # The old node holds `:old` and answers for it; `:new` it has not: ASK.
            replies.append(await connection.execute("SET", f"{tag}:new", "2"))
            replies.append(await connection.execute("GET", f"{tag}:old"))
            return replies
        finally:
            await connection.aclose()

    try:
        assert asyncio.run(scenario()) == [b"OK", b"OK", b"1"]
        assert _keys_on(source, f"{tag}:*") == [f"{tag}:old"]
        assert _keys_on(target, f"{tag}:*") == [f"{tag}:new"]
    finally:
        _end_migration(key_slot(tag), source, nodes)


def test_a_request_during_a_slots_migration_is_tried_again_until_it_ends(
    upstream: respx.Router, nodes: list[RedisServer]
) -> None:
    (name,) = _names_on_every_node(nodes)[:1]
    tag = f"promptgate:{{{name}}}"
    source = _owner_of(nodes, tag)
    target = next(n for n in nodes if n is not source)
    slot = key_slot(tag)
    try:
        with _client(upstream, nodes[0], keys_toml=_policy([name])) as client:
            _start_migration(slot, source, target)
            # The caller's keys are on neither node yet: the old one answers ASK, the new one
            # TRYAGAIN (a script's keys must all exist during a migration) until it ends.
            ending = threading.Timer(0.1, _end_migration, (slot, target, nodes))
            ending.start()
            answer = client.post(CHAT, json=HELLO, headers=_auth(name))
            ending.join()
        assert answer.status_code == 200, answer.text
        assert _keys_on(source, f"{tag}:*") == []
        _eventually(lambda: any(":usage:" in k for k in _keys_on(target, f"{tag}:*")))
    finally:
        _move_slot(slot, target, source, nodes)


def test_a_cluster_node_taken_for_the_whole_store_names_the_setting(
    upstream: respx.Router, nodes: list[RedisServer]
) -> None:
    (name,) = _names_on_every_node(nodes)[:1]
    elsewhere = next(n for n in nodes if n is not _owner_of(nodes, f"promptgate:{{{name}}}"))
    with _client(upstream, elsewhere, keys_toml=_policy([name]), redis_cluster=False) as client:
        answer = client.post(CHAT, json=HELLO, headers=_auth(name))
    assert answer.status_code == 503
    assert "set REDIS_CLUSTER=true" in answer.json()["error"]["message"]


def test_a_server_without_cluster_support_serves_every_slot(
    upstream: respx.Router, redis_server: RedisServer
) -> None:
    redis_server.flush()
    policy = _policy(["solo"], rpm=2)
    with _client(upstream, redis_server, keys_toml=policy, global_daily_tokens=1000) as client:
        statuses = [
            client.post(CHAT, json=HELLO, headers=_auth("solo")).status_code for _ in range(3)
        ]
    assert statuses == [200, 200, 429]
    assert _keys_on(redis_server, "promptgate:{solo}:m:*")


def test_commands_are_routed_by_their_first_key() -> None:
    assert first_key(("EVALSHA", "abc", 2, "promptgate:{a}:m:1", "promptgate:{a}:d:1", 5)) == (
        "promptgate:{a}:m:1"
    )
    assert first_key(("EVALSHA", "abc", 0, 5)) is None
    assert first_key(("HGETALL", "promptgate:{a}:usage:1")) == "promptgate:{a}:usage:1"
    assert first_key(("PING",)) is None and first_key(("CLUSTER", "SLOTS")) is None


def test_a_slot_map_without_announced_hosts_names_the_node_asked() -> None:
    reply = [
        [0, 99, [b"", 7001, b"id-a"]],
        [100, 16383, [b"?", 7002, b"id-b"], [b"10.0.0.9", 7003]],
    ]
    table = slot_table(reply, "seed.example")
    assert table[0] == table[99] == ("seed.example", 7001)
    assert table[100] == table[16383] == ("seed.example", 7002)
