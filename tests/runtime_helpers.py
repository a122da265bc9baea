"""Shared helpers for the runtime tests: in-process clusters on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from ruflo_consensus.core.base import Role
from ruflo_consensus.runtime import Node, build_node, load_spec, write_local_spec
from ruflo_consensus.runtime.spec import ClusterSpec
from ruflo_consensus.statemachine import KVStateMachine

FAST_RAFT = {
    "tick_ms": 10,
    "election_timeout_min_ms": 150,
    "election_timeout_max_ms": 300,
    "heartbeat_ms": 40,
}


def local_spec(tmp_path: Path, kind: str = "mesh", nodes: int = 3, **kw: Any) -> ClusterSpec:
    """A spec with free ports, fresh keys and fast elections."""
    raft = {**FAST_RAFT, **kw.pop("raft", {})}
    return load_spec(write_local_spec(tmp_path, kind, nodes, raft=raft, **kw))


SCOPES: dict[int, trio.CancelScope] = {}


async def _run_scoped(node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    with trio.CancelScope() as scope:
        SCOPES[id(node)] = scope
        async with trio.open_nursery() as n:
            await n.start(node.run)
            task_status.started()


async def start_node(nursery: trio.Nursery, spec: ClusterSpec, node_id: str, **kw: Any) -> Node:
    """Build and start one node; :func:`stop_node` cancels it alone."""
    node = build_node(spec, node_id, KVStateMachine(), **kw)
    await nursery.start(_run_scoped, node)
    return node


def stop_node(node: Node) -> None:
    """Cancel one node started by :func:`start_node` (its storage is closed)."""
    SCOPES.pop(id(node)).cancel()


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


async def wait_leader(nodes: dict[str, Node], timeout: float = 10.0) -> Node:
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
