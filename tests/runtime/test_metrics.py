"""Prometheus metrics of real nodes: scraped over HTTP, parsed, checked against the work."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ruflo_consensus.codec import encode_message
from ruflo_consensus.core.raft import VoteResponse
from ruflo_consensus.identity import NodeIdentity, NonceSource, seal
from ruflo_consensus.runtime import Node
from ruflo_consensus.runtime.spec import MetricsAddress, SpecError
from ruflo_consensus.runtime.transport import connect
from tests.helpers.runtime_helpers import (
    PATIENCE,
    get,
    halt,
    local_spec,
    put,
    start_nodes,
    wait_leader,
    wait_until,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=PATIENCE) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def scrape(node: Node, path: str = "/metrics") -> Samples:
    """GET the node's metrics over HTTP and parse the exposition into samples."""
    assert node.metrics_port is not None
    url = f"http://127.0.0.1:{node.metrics_port}{path}"
    status, content_type, text = await trio.to_thread.run_sync(_fetch, url)
    assert status == 200 and content_type.startswith("text/plain; version=")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, node: str, **labels: str) -> float:
    return samples[(name, frozenset({"node": node, **labels}.items()))]


async def test_a_scrape_returns_what_the_nodes_did(tmp_path: Path) -> None:
    extra = {n: {"metrics": "127.0.0.1:0"} for n in ("n1", "n2", "n3")}
    spec = local_spec(tmp_path, "mesh", 3, node_extra=extra)
    assert spec.metrics["n1"] == MetricsAddress("127.0.0.1", 0)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        assert all(n.metrics_port for n in nodes.values())
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes.values() if n is not leader)
        for i in range(3):
            await leader.submit(put(f"k{i}", str(i)))
        await follower.submit(put("f", "1"))  # forwarded: the leader proposes it
        assert await follower.read(get("k2")) == "2"
        assert await leader.read(get("f")) == "1"
        for n in nodes.values():
            await n.wait_applied(leader.applied, timeout=PATIENCE)

        # a frame signed by an impostor that claims to be the leader
        dst = follower.node_id
        impostor = NodeIdentity(leader.node_id, NodeIdentity.generate("x").signing_key)
        harmless = encode_message(VoteResponse(leader.node_id, dst, 1, False, False))
        before = follower.rejected["bad-signature"]
        async with trio.open_nursery() as n:
            ws = await connect(n, spec.endpoints[dst], "/peer")
            await ws.send_message(seal(impostor, dst, 0, harmless, NonceSource()))
            await ws.aclose()
        await wait_until(lambda: follower.rejected["bad-signature"] == before + 1)

        scraped = {n.node_id: await scrape(n) for n in nodes.values()}
        leaders = [n for n, s in scraped.items() if value(s, "ruflo_role", n, role="leader") == 1]
        assert leaders == [leader.node_id]
        for n, s in scraped.items():
            assert sum(v for (name, _), v in s.items() if name == "ruflo_role") == 1
            assert value(s, "ruflo_term", n) >= 1
            assert value(s, "ruflo_commit_index", n) >= 4
            assert value(s, "ruflo_applied_index", n) >= 4
            assert value(s, "ruflo_last_index", n) >= 4
            assert value(s, "ruflo_wal_fsync_seconds_count", n) > 0
            assert value(s, "ruflo_apply_seconds_count", n) > 0
            assert value(s, "ruflo_frames_received_total", n) > 0
            assert sum(value(s, "ruflo_frames_sent_total", n, peer=p) for p in nodes if p != n)
        lead = scraped[leader.node_id]
        assert value(lead, "ruflo_proposals_total", leader.node_id) >= 4
        assert value(scraped[dst], "ruflo_proposals_total", dst) == 0
        # requests counted where they were made: 3 writes and a read on the leader, a
        # write and a read on the follower (its forwarded write is not the leader's request)
        ok = {"op": "submit", "outcome": "ok"}
        assert value(lead, "ruflo_client_request_seconds_count", leader.node_id, **ok) == 3
        f = scraped[dst]
        assert value(f, "ruflo_client_request_seconds_count", dst, **ok) == 1
        read_ok = {"op": "read", "outcome": "ok"}
        assert value(f, "ruflo_client_request_seconds_count", dst, **read_ok) == 1
        assert value(lead, "ruflo_client_request_seconds_count", leader.node_id, **read_ok) == 1
        rejected = value(f, "ruflo_frames_rejected_total", dst, reason="bad-signature")
        assert rejected == before + 1

        # not the metrics path
        url = f"http://127.0.0.1:{leader.metrics_port}/x"
        status, _, _ = await trio.to_thread.run_sync(_fetch, url)
        assert status == 404
        # the server stops with its node
        port = follower.metrics_port
        await halt(follower)
        assert follower.metrics_port is None
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "bad", ["127.0.0.1:99999", "nowhere", "127.0.0.1:port", "http://127.0.0.1:9101", -1, 1.5]
)
def test_a_bad_metrics_address_is_a_spec_error(tmp_path: Path, bad: object) -> None:
    with pytest.raises(SpecError, match=r"n2.*metrics"):
        local_spec(tmp_path, "mesh", 3, node_extra={"n2": {"metrics": bad}})


def test_a_bare_port_binds_localhost(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, node_extra={"n1": {"metrics": 9101}})
    assert spec.metrics == {"n1": MetricsAddress("127.0.0.1", 9101)}
    assert spec.metrics["n1"].url() == "http://127.0.0.1:9101/metrics"
    assert MetricsAddress.parse("[::1]:9101").url() == "http://[::1]:9101/metrics"


def _listening_ports() -> set[int]:
    """TCP ports this process listens on (Linux: its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="needs Linux /proc")
async def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"data_dir": None})
    assert spec.metrics == {}
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        assert all(n.metrics_port is None for n in nodes.values())
        assert _listening_ports() == {n.port for n in nodes.values()}
        # the registry is still there for an embedder's own exporter
        assert b"ruflo_role{" in nodes["n1"].metrics.exposition()
        nursery.cancel_scope.cancel()
