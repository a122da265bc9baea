"""Client authentication: only listed client keys may use ``/client``; replays are refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from ruflo_consensus.identity import NodeIdentity, NonceSource, keygen, seal
from ruflo_consensus.runtime import ClientError, ClusterClient, SpecError, load_spec
from ruflo_consensus.runtime.client import KIND_CLIENT_REQUEST, default_client_identity
from ruflo_consensus.runtime.transport import connect
from ruflo_consensus.statemachine import KVStateMachine
from tests.helpers.runtime_helpers import (
    PATIENCE,
    get,
    local_spec,
    open_reply,
    put,
    start_nodes,
    wait_leader,
)


async def _exchange(spec: Any, node: str, frames: list[bytes]) -> list[dict[str, Any]]:
    """Send raw frames to a node's /client and collect one reply per frame."""
    replies = []
    async with trio.open_nursery() as n:
        ws = await connect(n, spec.endpoints[node], "/client")
        for f in frames:
            await ws.send_message(f)
            replies.append(open_reply(spec, node, await ws.get_message()))
        await ws.aclose()
    return replies


def _request(rid: int, key: str) -> bytes:
    return msgpack.packb({"id": rid, "op": "submit", "command": put(key, "evil")})


async def test_only_listed_clients_are_served_and_each_refusal_is_counted(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"data_dir": None})
    admin = default_client_identity(spec)
    assert admin is not None and admin.node_id == "admin"
    stranger = NodeIdentity.generate("mallory")
    impostor = NodeIdentity("admin", NodeIdentity.generate("x").signing_key)
    nonces = NonceSource()
    now = int(time.time() * 1000)
    replayed = seal(admin, "n2", KIND_CLIENT_REQUEST, _request(7, "r"), nonces)
    frames = [
        _request(1, "a"),  # unsigned
        seal(stranger, "n2", KIND_CLIENT_REQUEST, _request(2, "b"), nonces),  # unknown-client
        seal(impostor, "n2", KIND_CLIENT_REQUEST, _request(3, "c"), nonces),  # bad-signature
        seal(admin, "n1", KIND_CLIENT_REQUEST, _request(4, "d"), nonces),  # for another node
        seal(admin, "n2", KIND_CLIENT_REQUEST, _request(5, "e"), nonces, now - 60_000),  # stale
        seal(admin, "n2", KIND_CLIENT_REQUEST, _request(6, "f"), nonces, now + 60_000),  # future
        replayed,
        replayed,
    ]
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        n2 = nodes["n2"]
        replies = await _exchange(spec, "n2", frames)
        # every refusal is typed and names the request it refuses
        assert [r["error"] for r in replies[:6]] == ["UNAUTHENTICATED"] * 6
        assert [r["id"] for r in replies] == [1, 2, 3, 4, 5, 6, 7, 7]
        assert replies[6]["ok"] is True  # the first copy was a valid request
        assert replies[7]["error"] == "UNAUTHENTICATED" and "seen before" in replies[7]["message"]
        rejected = n2.rejected
        assert rejected["client-unsigned"] == 1
        assert rejected["client-unknown-client"] == 1
        assert rejected["client-bad-signature"] == 1
        assert rejected["client-wrong-destination"] == 1
        assert rejected["client-stale"] == 2
        assert rejected["client-replayed"] == 1
        # nothing a refused request carried was applied; the replayed one applied once
        machine = n2.table.machine
        assert isinstance(machine, KVStateMachine)
        await n2.wait_applied(n2.core.commit, timeout=PATIENCE)
        assert set(machine.data) == {"r"}
        assert n2.table.applied_count == 1
        # a listed client is served, and its sessions live in its own namespace
        client = ClusterClient(spec, "n2", only=True)
        await client.call("submit", 10.0, command=put("ok", "1"), client="s", seq=1)
        assert (await client.call("read", 10.0, query=get("ok")))[1] == "1"
        assert "admin/s" in n2.table.sessions
        with pytest.raises(ClientError) as info:
            await ClusterClient(spec, "n2", identity=stranger).call("status")
        assert info.value.code == "UNAUTHENTICATED"  # raised at once, not tried elsewhere
        nursery.cancel_scope.cancel()


async def test_unsigned_clients_only_where_the_spec_allows_them(tmp_path: Path) -> None:
    spec = local_spec(
        tmp_path, "mesh", 3, runtime={"data_dir": None, "allow_unsigned_clients": True}
    )
    stranger = NodeIdentity.generate("mallory")
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        signed_by_stranger = seal(
            stranger, "n1", KIND_CLIENT_REQUEST, _request(2, "b"), NonceSource()
        )
        replies = await _exchange(spec, "n1", [_request(1, "a"), signed_by_stranger])
        assert replies[0]["ok"] is True  # unsigned: served in this mode
        assert replies[1]["error"] == "UNAUTHENTICATED"  # a signature still has to verify
        assert nodes["n1"].rejected["client-unknown-client"] == 1
        unsigned = ClusterClient(spec, "n1", only=True)
        unsigned.identity = None
        await unsigned.call("submit", 10.0, command=put("x", "1"), client="s", seq=1)
        assert "/unsigned/s" in nodes["n1"].table.sessions
        nursery.cancel_scope.cancel()


def test_clients_in_the_spec_are_checked(tmp_path: Path) -> None:
    base = local_spec(tmp_path, "mesh", 3)
    assert set(base.clients) == {"admin"}
    assert base.clients["admin"].key_file == tmp_path / "keys" / "admin.key"
    text = (tmp_path / "cluster.toml").read_text()
    key = keygen("ops", tmp_path / "keys" / "ops.key").public_key.hex()
    good = text + f'\n[[clients]]\nid = "ops"\npublic_key = "{key}"\n'
    (tmp_path / "good.toml").write_text(good)
    assert load_spec(tmp_path / "good.toml").clients["ops"].public_key == bytes.fromhex(key)
    for extra, needle in [
        ('\n[[clients]]\nid = "n1"\nkey_file = "k"\n', "used twice"),
        ('\n[[clients]]\nid = "admin"\nkey_file = "k"\n', "used twice"),
        ('\n[[clients]]\nid = "a/b"\nkey_file = "k"\n', "no '/'"),
        ('\n[[clients]]\nid = "x"\n', "needs a key_file or a public_key"),
        ('\n[[clients]]\nid = "x"\npublic_key = "abcd"\n', "64 hex digits"),
        ('\n[[clients]]\nid = "x"\nkey_file = "k"\nrole = "root"\n', r"unknown clients\[1\] field"),
    ]:
        (tmp_path / "bad.toml").write_text(text + extra)
        with pytest.raises(SpecError, match=needle):
            load_spec(tmp_path / "bad.toml")
