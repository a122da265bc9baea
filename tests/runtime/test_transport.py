"""The signed websocket transport: every kind of bad frame is refused, counted, harmless."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed

from ruflo_consensus.codec import encode_message
from ruflo_consensus.core.base import Entry, Proposal
from ruflo_consensus.core.raft import AppendEntries, VoteResponse
from ruflo_consensus.identity import NodeIdentity, NonceSource, load_key_file, seal
from ruflo_consensus.runtime import ClusterClient, Endpoint, NodeClient
from ruflo_consensus.runtime.client import KIND_CLIENT_REQUEST, default_client_identity
from ruflo_consensus.runtime.spec import SpecError
from ruflo_consensus.runtime.transport import connect
from tests.helpers.runtime_helpers import (
    PATIENCE,
    get,
    local_spec,
    open_reply,
    put,
    start_nodes,
    wait_leader,
)


async def _send_raw(endpoint: Endpoint, frames: list[bytes | str]) -> None:
    async with trio.open_nursery() as n:
        ws = await connect(n, endpoint, "/peer", max_message_size=8 << 20)
        for f in frames:
            await ws.send_message(f)
        await ws.aclose()


async def test_bad_frames_are_rejected_counted_and_change_nothing(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes)
        await leader.submit(put("a", "1"))
        target = next(n for n in nodes.values() if n is not leader)
        await target.wait_applied(leader.applied, timeout=PATIENCE)
        other = next(n for n in nodes.values() if n not in (leader, target))
        lead_id = load_key_file(spec.key_files[leader.node_id])
        other_id = load_key_file(spec.key_files[other.node_id])
        core = target.core
        term, last = core.term, core.last_index  # type: ignore[attr-defined]
        stepped: list[object] = []
        real_step = core.step

        def spy(m: object) -> None:
            stepped.append(m)
            real_step(m)  # type: ignore[arg-type]

        core.step = spy  # type: ignore[method-assign]
        # a message that would take over the follower at a much higher term if accepted
        evil = AppendEntries(
            leader.node_id,
            target.node_id,
            term + 100,
            last,
            core.term_at(last),  # type: ignore[attr-defined]
            (Entry(term + 100, last + 1, Proposal("evil", 1, put("a", "evil"))),),
            last + 1,
        )
        payload = encode_message(evil)
        nonces = NonceSource()
        dst = target.node_id
        now = int(time.time() * 1000)
        impostor = NodeIdentity(leader.node_id, NodeIdentity.generate("x").signing_key)
        harmless = encode_message(VoteResponse(leader.node_id, dst, term, False, False))
        replayed = seal(lead_id, dst, 0, harmless, nonces)
        frames: list[bytes | str] = [
            seal(impostor, dst, 0, payload, nonces),  # forged: bad-signature
            seal(NodeIdentity.generate("zz"), dst, 0, payload, nonces),  # unknown-sender
            seal(lead_id, dst, 0, payload, nonces, now_ms=now - 60_000),  # stale
            seal(lead_id, dst, 0, payload, nonces, now_ms=now + 60_000),  # from the future
            b"\x00" * (spec.runtime.max_frame + 1),  # too-large, refused before decoding
            b"\xc1\xc1\xc1",  # malformed msgpack
            msgpack.packb([b"body", b"sig"]),  # malformed envelope
            "a text message",  # malformed: frames are binary
            seal(lead_id, dst, 0, b"\xc1", nonces),  # signed, but the protocol frame is junk
            seal(lead_id, dst, 9, b"", nonces),  # unknown payload kind
            seal(other_id, dst, 0, payload, nonces),  # signed by another node than src
            seal(lead_id, "nX", 0, payload, nonces),  # for a node not in the cluster
            replayed,
            replayed,  # the same nonce again
        ]
        await _send_raw(spec.endpoints[dst], frames)
        # a grossly oversized frame closes the connection at the websocket layer
        closed = False
        try:
            async with trio.open_nursery() as n:
                ws = await connect(n, spec.endpoints[dst], "/peer", max_message_size=8 << 20)
                await ws.send_message(b"\x00" * (3 << 20))
                await ws.get_message()
        except* ConnectionClosed:
            closed = True
        assert closed
        with trio.fail_after(PATIENCE):
            while target.rejected["too-large"] < 2 or not any(
                isinstance(m, VoteResponse) for m in stepped
            ):
                await trio.sleep(0.01)
        rejected = target.rejected
        assert rejected["bad-signature"] == 1
        assert rejected["unknown-sender"] == 1
        assert rejected["stale"] == 2
        assert rejected["too-large"] == 2
        assert rejected["malformed"] == 4  # bad msgpack, bad envelope, text, junk protocol frame
        assert rejected["unknown-kind"] == 1
        assert rejected["sender-mismatch"] == 1
        assert rejected["wrong-destination"] == 1
        assert rejected["replayed"] == 1
        # only the first copy of the harmless frame got through; nothing of the evil one did
        assert sum(isinstance(m, VoteResponse) for m in stepped) == 1
        assert not any(isinstance(m, AppendEntries) and m.term > term for m in stepped)
        assert core.term == term and core.leader == leader.node_id
        assert all(
            e.proposal is None or e.proposal.client != "evil"
            for e in core.log  # type: ignore[attr-defined]
        )
        # the node keeps serving, and the status shows the counts
        await target.submit(put("b", "2"))
        assert await target.read(get("b")) == "2"
        assert await target.read(get("a")) == "1"
        assert target.status()["rejected"]["replayed"] == 1
        nursery.cancel_scope.cancel()


async def test_relays_enforce_the_hop_budget_and_check_link_state(tmp_path: Path) -> None:
    """A relayed frame with no hops left dies at the relay; a bad link-state announcement
    (a link its sender does not have, or not a list) is refused and changes no route."""
    spec = local_spec(tmp_path, "ring", 5, runtime={"data_dir": None})
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        n1 = load_key_file(spec.key_files["n1"])
        nonces = NonceSource()
        n2 = nodes["n2"]
        probe = encode_message(VoteResponse("n1", "n3", 0, False, False))
        frames: list[bytes | str] = [
            seal(n1, "n3", 0, probe, nonces, hops=0),  # n2 may not relay it any further
            seal(n1, "*", 3, msgpack.packb(["n3"]), nonces),  # n1 has no link to n3
            seal(n1, "*", 3, b"\xc1", nonces),  # not msgpack
            seal(n1, "*", 7, b"", nonces),  # no such broadcast kind
        ]
        await _send_raw(spec.endpoints["n2"], frames)
        with trio.fail_after(PATIENCE):
            while n2.rejected["unknown-kind"] < 1:
                await trio.sleep(0.01)
        assert n2.rejected["hop-limit"] == 1
        assert n2.rejected["bad-field"] == 1 and n2.rejected["malformed"] == 1
        assert n2.status()["down_links"] == []
        assert nodes["n3"].rejected["hop-limit"] == 0
        nursery.cancel_scope.cancel()


async def test_bad_client_requests_are_answered_and_counted(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "star", 3)
    admin = default_client_identity(spec)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        n3 = nodes["n3"]
        async with trio.open_nursery() as n:
            ws = await connect(n, spec.endpoints["n3"], "/client")
            signer = NodeClient(ws, admin, "n3")  # signs what we send by hand below

            def signed(payload: bytes) -> bytes:
                assert admin is not None
                return seal(admin, "n3", KIND_CLIENT_REQUEST, payload, signer.nonces)

            def answer(data: bytes, signed_reply: bool) -> dict:
                """The reply map; a signed request's reply is signed by n3 for admin."""
                reply = open_reply(spec, "n3", data)
                if signed_reply:  # it names the request it answers
                    assert reply["re"] == signer.nonces.last
                else:
                    assert "re" not in reply
                return reply

            for make, signed_reply in (  # each frame made just before it is sent
                (lambda: b"\xc1", False),  # neither a map nor an envelope
                (lambda: signed(b"\xc1"), True),  # signed, but the request is not msgpack
                (lambda: signed(msgpack.packb([1, 2])), True),  # signed, but not a map
                (lambda: signer.frame({"id": 1, "op": "nope"}), True),
            ):
                await ws.send_message(make())
                reply = answer(await ws.get_message(), signed_reply)
                assert reply["ok"] is False and reply["error"] == "BAD_REQUEST"
            await ws.send_message(
                signer.frame({"id": 2, "op": "submit", "command": put("k", "v"), "client": 5})
            )
            assert answer(await ws.get_message(), True)["error"] == "BAD_REQUEST"
            await ws.aclose()
        assert n3.rejected["client-malformed"] == 3
        assert n3.rejected["client-unknown-op"] == 1
        assert n3.rejected["client-bad-field"] == 1
        async with ClusterClient(spec).connect("n3") as c:
            assert await c.submit(put("k", "v"), client="c1", seq=1) is None
            assert await c.read(get("k")) == "v"
            bad = await c.submit({"op": "frobnicate", "key": "k"})
            assert bad.code == "UNKNOWN_OP"
            status = await c.status()
            assert status["id"] == "n3" and status["applied"] >= 2
        nursery.cancel_scope.cancel()


async def test_reconnect_after_a_peer_restarts(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"reconnect_max_s": 0.2})
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec, ["n1", "n2"])
        await wait_leader(nodes)
        link = nodes["n1"].transport.links["n3"]
        assert not link.connected and link.failures >= 1  # n3 is not up yet
        nodes.update(await start_nodes(nursery, spec, ["n3"]))
        with trio.fail_after(PATIENCE):
            while not link.connected:
                await trio.sleep(0.02)
        leader = await wait_leader(nodes)
        await leader.submit(put("x", "1"))
        assert await nodes["n3"].read(get("x")) == "1"
        nursery.cancel_scope.cancel()


def test_spec_errors_are_typed(tmp_path: Path) -> None:
    from ruflo_consensus.runtime import load_spec

    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "mesh"\n[[nodes]]\nid = "n1"\nendpoint = "http://x:1"\n')
    with pytest.raises(SpecError, match="ws://HOST:PORT"):
        load_spec(bad)
    bad.write_text(
        'kind = "mesh"\n[raft]\nbogus = 1\n[[nodes]]\nid = "n1"\nendpoint = "ws://a:1"\n'
    )
    with pytest.raises(SpecError, match="bogus"):
        load_spec(bad)
    bad.write_text('kind = "mesh"\n[[nodes]]\nid = "n1"\nendpoint = "wss://a:1"\n')
    with pytest.raises(SpecError, match="tls_cert"):
        load_spec(bad)


def _self_signed(tmp_path: Path) -> tuple[Path, Path, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    args += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=n"]
    args += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(args, check=True, capture_output=True)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return cert, key, hashlib.sha256(der).hexdigest()


async def test_wss_with_pinned_fingerprints(tmp_path: Path) -> None:
    cert, key, fingerprint = _self_signed(tmp_path)
    tls = {"tls_cert": str(cert), "tls_key": str(key), "tls_fingerprint": fingerprint}
    wrong = {**tls, "tls_fingerprint": "00" * 32}
    spec = local_spec(
        tmp_path,
        "mesh",
        3,
        scheme="wss",
        node_extra={"n1": tls, "n2": tls, "n3": wrong},  # nobody can pin n3's certificate
        runtime={"data_dir": None},
    )
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader({k: nodes[k] for k in ("n1", "n2")})
        await leader.submit(put("secure", "yes"))
        other = nodes["n2" if leader.node_id == "n1" else "n1"]
        assert await other.read(get("secure")) == "yes"
        link = nodes["n1"].transport.links["n3"]
        assert not link.connected and "fingerprint" in link.last_error
        assert nodes["n1"].transport.links["n2"].connected
        async with ClusterClient(spec).connect("n1") as c:  # wss://, pinned, signed
            assert await c.read(get("secure")) == "yes"
        nursery.cancel_scope.cancel()
