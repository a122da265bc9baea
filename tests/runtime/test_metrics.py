"""Prometheus metrics of real nodes: scraped over HTTP, parsed, checked against the work."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ruflo_consensus.codec import encode_message
from ruflo_consensus.core.raft import VoteResponse
from ruflo_consensus.identity import NodeIdentity, NonceSource, seal
from ruflo_consensus.runtime import Node, NodeError
from ruflo_consensus.runtime.metrics import NodeMetrics, serve_metrics
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
    before = _listening_ports()
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        await wait_leader(nodes)
        assert all(n.metrics_port is None for n in nodes.values())
        assert _listening_ports() - before == {n.port for n in nodes.values()}
        # the registry is still there for an embedder's own exporter
        assert b"ruflo_role{" in nodes["n1"].metrics.exposition()
        nursery.cancel_scope.cancel()


class _FakeNode:
    """What the collector reads of a node, without one (a core with no log positions)."""

    node_id = "n9"

    def status(self) -> dict[str, Any]:
        return {
            "role": "follower",
            "term": 7,
            "commit": None,
            "applied": 3,
            "last_index": None,
            "snapshot_index": None,
            "links": [{"peer": "n8", "sent": 5, "dropped": 1}],
            "received": 4,
            "delivered": 2,
            "relayed": 0,
            "unroutable": 0,
            "rejected": {"malformed": 2},
            "proposed": 0,
            "proposals_dropped": {},
        }


async def _raw_http(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        out = b""
        while data := await stream.receive_some(65536):
            out += data
    return out


async def test_the_metrics_server_answers_http_and_stops_when_cancelled() -> None:
    metrics = NodeMetrics(_FakeNode())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, metrics, "127.0.0.1", 0)
        ok = await _raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = ok.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
        assert f"Content-Length: {len(body)}".encode() in head
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
        }
        assert value(samples, "ruflo_term", "n9") == 7
        assert value(samples, "ruflo_role", "n9", role="follower") == 1
        assert value(samples, "ruflo_frames_dropped_total", "n9", peer="n8") == 1
        assert value(samples, "ruflo_frames_rejected_total", "n9", reason="malformed") == 2
        assert not any(name == "ruflo_commit_index" for name, _ in samples)  # no such index
        openmetrics = b"Accept: application/openmetrics-text; version=1.0.0\r\n"
        om = await _raw_http(port, b"GET / HTTP/1.1\r\n" + openmetrics + b"\r\n")
        assert b"application/openmetrics-text" in om.split(b"\r\n\r\n")[0]
        assert om.endswith(b"# EOF\n")
        head_only = await _raw_http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head_only.startswith(b"HTTP/1.1 200") and head_only.endswith(b"\r\n\r\n")
        assert (await _raw_http(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405"
        )
        assert (await _raw_http(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await _raw_http(port, b"GET /other HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        # a connection that says nothing does not hold the server up
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await _raw_http(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await idle.aclose()
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    # nothing went to the process's global registry
    assert not [m for m in REGISTRY.collect() if m.name.startswith("ruflo")]


async def test_a_taken_metrics_port_is_a_node_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NodeError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await serve_metrics(NodeMetrics(_FakeNode()), "127.0.0.1", port)
