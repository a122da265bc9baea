"""Shared helpers for the runtime tests: in-process clusters on 127.0.0.1.

The tests run on a 2-core machine that other test runs load too: they wait on
conditions (never on a fixed sleep) with generous bounds (:data:`PATIENCE`), so a slow
machine makes them slower, not red, and a real hang still fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ruflo_consensus.core.base import Role
from ruflo_consensus.runtime import Node, build_node, load_spec, write_local_spec
from ruflo_consensus.runtime.spec import ClusterSpec
from ruflo_consensus.statemachine import KVStateMachine

FAST_RAFT = {
    "tick_ms": 10,
    "election_timeout_min_ms": 300,  # tolerates a loaded machine's scheduling stalls
    "election_timeout_max_ms": 600,
    "heartbeat_ms": 50,
}


def local_spec(tmp_path: Path, kind: str = "mesh", nodes: int = 3, **kw: Any) -> ClusterSpec:
    """A spec with free ports, fresh keys and fast elections."""
    raft = {**FAST_RAFT, **kw.pop("raft", {})}
    return load_spec(write_local_spec(tmp_path, kind, nodes, raft=raft, **kw))


PATIENCE = 60.0
"""How long a test waits for a condition (an election, a catch-up) before it fails."""


async def wait_until(
    condition: Callable[[], bool], timeout: float = PATIENCE, poll: float = 0.02
) -> None:
    """Return once ``condition()`` holds; ``trio.TooSlowError`` after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(poll)


SCOPES: dict[int, trio.CancelScope] = {}
STOPPED: dict[int, trio.Event] = {}


async def _run_scoped(node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    STOPPED[id(node)] = stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            SCOPES[id(node)] = scope
            async with trio.open_nursery() as n:
                await n.start(node.run)
                task_status.started()
    finally:
        stopped.set()


async def start_node(nursery: trio.Nursery, spec: ClusterSpec, node_id: str, **kw: Any) -> Node:
    """Build and start one node; :func:`stop_node` cancels it alone."""
    node = build_node(spec, node_id, KVStateMachine(), **kw)
    await nursery.start(_run_scoped, node)
    return node


def stop_node(node: Node) -> None:
    """Cancel one node started by :func:`start_node` (its storage is closed)."""
    SCOPES.pop(id(node)).cancel()


async def halt(node: Node) -> None:
    """Stop one node and wait until it has stopped (its storage closed, its port free)."""
    stop_node(node)
    with trio.fail_after(PATIENCE):
        await STOPPED.pop(id(node)).wait()


async def start_nodes(
    nursery: trio.Nursery,
    spec: ClusterSpec,
    ids: list[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Node]:
    """Start the given nodes (default: all) in ``nursery``."""
    return {
        node_id: await start_node(nursery, spec, node_id, **(options or {}).get(node_id, {}))
        for node_id in ids or spec.ids
    }


async def wait_leader(nodes: dict[str, Node], timeout: float = PATIENCE) -> Node:
    """The one node that leads with every given node following it."""
    with trio.fail_after(timeout):
        while True:
            leaders = [n for n in nodes.values() if n.role is Role.LEADER]
            if len(leaders) == 1 and all(n.leader == leaders[0].node_id for n in nodes.values()):
                return leaders[0]
            await trio.sleep(0.02)


def put(key: str, value: str) -> dict[str, str]:
    """A KV put command."""
    return {"op": "put", "key": key, "value": value}


def get(key: str) -> dict[str, str]:
    """A KV get query."""
    return {"op": "get", "key": key}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``ruflo-consensus ARGS`` as a process (a wide terminal: table rows stay whole)."""
    return subprocess.run(
        [sys.executable, "-m", "ruflo_consensus.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def open_reply(spec: ClusterSpec, node: str, data: bytes) -> dict[str, Any]:
    """A raw ``/client`` reply as a map: a bare map as it is, a signed one after checking
    that ``node`` signed it as a client reply (its payload then carries ``re``)."""
    import msgpack

    from ruflo_consensus.identity import load_manifest, parse_frame, verify_envelope
    from ruflo_consensus.runtime.client import KIND_CLIENT_REPLY

    if 0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF):
        reply = msgpack.unpackb(data)
    else:
        env, body, signature, _ = parse_frame(data)
        verify_envelope(env, body, signature, {node: load_manifest(spec.manifest_file(node))[1]})
        assert env.sender == node and env.kind == KIND_CLIENT_REPLY
        reply = msgpack.unpackb(env.payload)
        assert isinstance(reply["re"], bytes) and len(reply["re"]) == 16
    assert isinstance(reply, dict)
    return reply
