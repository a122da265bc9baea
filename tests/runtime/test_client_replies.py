"""Signed client replies: a client that knows the node's key takes only the node's answer.

A fake node on 127.0.0.1 answers each request with a volley of replies that must all be
dropped — unsigned, signed by a stranger, altered, for another client, of the wrong kind,
naming another request, replayed — and then with the real one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from ruflo_consensus.identity import NodeIdentity, NonceSource, parse_frame, seal
from ruflo_consensus.runtime import ClusterClient, Endpoint, NodeClient
from ruflo_consensus.runtime.client import KIND_CLIENT_REPLY, KIND_CLIENT_REQUEST
from ruflo_consensus.statemachine import encode_result
from tests.helpers.runtime_helpers import local_spec, put, start_nodes, wait_leader

NODE = NodeIdentity.generate("n1", seed=b"n" * 32)
STRANGER = NodeIdentity.generate("n1", seed=b"s" * 32)  # claims to be n1, other key
ADMIN = NodeIdentity.generate("admin", seed=b"a" * 32)


def _reply(rid: int, re: bytes, value: Any) -> bytes:
    return msgpack.packb({"id": rid, "ok": True, "result": encode_result(value), "re": re})


def _tamper(frame: bytes) -> bytes:
    body, signature = msgpack.unpackb(frame)
    return msgpack.packb([body.replace(b"real", b"fake"), signature])


async def _fake_node(request: WebSocketRequest) -> None:
    """Answer every request with the forgeries, then (last) the real reply."""
    ws = await request.accept()
    with contextlib.suppress(ConnectionClosed):  # the client may leave mid-volley
        await _answer_forever(ws)


async def _answer_forever(ws: WebSocketConnection) -> None:
    nonces = NonceSource()
    previous: bytes | None = None
    while True:
        env, _, _, _ = parse_frame(await ws.get_message())
        rid = msgpack.unpackb(env.payload)["id"]
        real = seal(NODE, "admin", KIND_CLIENT_REPLY, _reply(rid, env.nonce, "real"), nonces)
        volley = [
            _reply(rid, env.nonce, "bare"),  # unsigned
            seal(STRANGER, "admin", KIND_CLIENT_REPLY, _reply(rid, env.nonce, "x"), nonces),
            _tamper(seal(NODE, "admin", KIND_CLIENT_REPLY, _reply(rid, env.nonce, "real"), nonces)),
            seal(NODE, "eve", KIND_CLIENT_REPLY, _reply(rid, env.nonce, "x"), nonces),
            seal(NODE, "admin", KIND_CLIENT_REQUEST, _reply(rid, env.nonce, "x"), nonces),
            seal(NODE, "admin", KIND_CLIENT_REPLY, _reply(rid, b"\0" * 16, "x"), nonces),
        ]
        if previous is not None:
            volley.append(previous)  # the genuine answer to the previous request, again
        for frame in [*volley, real]:
            await ws.send_message(frame)
        previous = real


async def test_only_the_reply_the_node_signed_for_this_request_is_taken() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _fake_node, "127.0.0.1", 0, None)
        endpoint = Endpoint.parse(f"ws://127.0.0.1:{server.port}")
        async with NodeClient.open(
            endpoint, identity=ADMIN, node_id="n1", node_key=NODE.public_key
        ) as client:
            assert await client.submit(put("k", "v")) == "real"
            assert await client.submit(put("k", "w")) == "real"
            assert dict(client.bad_replies) == {
                "unsigned": 2,
                "bad-signature": 4,  # the stranger's and the altered one, twice each
                "wrong-destination": 2,
                "unknown-kind": 2,
                "unmatched": 2,  # names a request we never sent
                "replayed": 1,  # the first answer, sent again after the second request
            }
        nursery.cancel_scope.cancel()


async def test_a_client_without_the_node_key_takes_the_first_reply_it_gets() -> None:
    """What verification buys: the same volley fools a client that does not verify."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _fake_node, "127.0.0.1", 0, None)
        endpoint = Endpoint.parse(f"ws://127.0.0.1:{server.port}")
        async with NodeClient.open(endpoint, identity=ADMIN, node_id="n1") as client:
            assert await client.submit(put("k", "v")) == "bare"
        nursery.cancel_scope.cancel()


def test_a_node_key_needs_a_signing_client() -> None:
    with pytest.raises(ValueError, match="node_key needs identity"):
        NodeClient.open("ws://127.0.0.1:1", node_key=NODE.public_key)


async def test_a_real_cluster_signs_every_reply_to_a_signed_client(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        client = ClusterClient(spec)
        for node in spec.ids:
            async with client.connect(node) as c:
                assert c.node_key == nodes[node].identity.public_key
                assert await c.submit(put(f"k-{node}", "v"), client=f"c-{node}", seq=1) is None
                assert (await c.status())["id"] == node
                assert not c.bad_replies
        nursery.cancel_scope.cancel()
