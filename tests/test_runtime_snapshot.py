"""Snapshots in the runtime: compaction, InstallSnapshot catch-up, restart from snapshot + WAL."""

from __future__ import annotations

from pathlib import Path

import trio

from ruflo_consensus.core.base import Role
from ruflo_consensus.core.raft import RaftCore
from ruflo_consensus.runtime import Node
from ruflo_consensus.statemachine import KVStateMachine
from ruflo_consensus.storage import FileStorage

from .runtime_helpers import get, local_spec, put, start_node, start_nodes, stop_node, wait_leader

SNAP = {"snapshot_entries": 5}


def _core(node: Node) -> RaftCore:
    assert isinstance(node.core, RaftCore)
    return node.core


def _data(node: Node) -> dict[str, str]:
    assert isinstance(node.table.machine, KVStateMachine)
    return dict(node.table.machine.data)


async def test_a_node_behind_the_compacted_log_catches_up_by_install_snapshot(
    tmp_path: Path,
) -> None:
    spec = local_spec(tmp_path, "mesh", 3, raft=SNAP)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes, timeout=30)
        lagger = next(n for n in nodes.values() if n is not leader)
        for i in range(3):
            await leader.submit(put(f"k{i}", str(i)), timeout=30)
        await lagger.wait_applied(leader.applied, timeout=30)
        behind = _core(lagger).last_index
        assert _core(lagger).snapshot_index == 0  # under snapshot_entries: no snapshot yet
        stop_node(nodes.pop(lagger.node_id))
        # one session writes x many times: its last (client, seq) lives only in snapshots
        for seq in range(1, 21):
            await leader._submit_as("writer", seq, put("x", str(seq)), 30)
        for i in range(3, 8):
            await leader.submit(put(f"k{i}", str(i)), timeout=30)
        assert leader.snapshots_taken >= 2
        assert _core(leader).first_index > behind + 1  # what the lagger needs next is gone
        back = await start_node(nursery, spec, lagger.node_id)
        nodes[back.node_id] = back
        await back.wait_applied(leader.applied, timeout=30)
        assert back.snapshots_restored >= 1 and _core(back).snapshot_index > behind
        assert _data(back) == _data(leader)
        assert await back.read(get("k7"), timeout=30) == "7"
        assert await back.read(get("x"), timeout=30) == "20"
        # the session table came with the snapshot: as leader, the caught-up node answers a
        # retry of the writer's last request from it instead of applying it again
        with trio.fail_after(30):
            while back.role is not Role.LEADER:
                if leader.role is Role.LEADER:
                    leader.transfer_leadership(back.node_id)
                await trio.sleep(0.3)
        assert await back._submit_as("writer", 20, put("x", "again"), 30) is None
        assert await back.read(get("x"), timeout=30) == "20"
        assert back.table.duplicate_count >= 1
        nursery.cancel_scope.cancel()


async def test_restarted_nodes_recover_from_snapshot_plus_wal(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "ring", 3, raft=SNAP)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes, timeout=30)
        for i in range(23):
            await leader.submit(put(f"k{i % 7}", str(i)), timeout=30)
        for n in nodes.values():
            await n.wait_applied(leader.applied, timeout=30)
        want = _data(leader)
        before = {n.node_id: (_core(n).snapshot_index, n.applied) for n in nodes.values()}
        assert all(snap > 0 for snap, _ in before.values())
        for n in nodes.values():
            stop_node(n)
        await trio.sleep(0.05)
        # the WAL of each node holds a snapshot and the entries after it
        for node_id, (snap, applied) in before.items():
            data_dir = spec.data_dir(node_id)
            assert data_dir is not None
            storage = FileStorage(str(data_dir))
            stored = storage.load()
            storage.close()
            assert stored.snapshot is not None and stored.snapshot.index == snap
            assert [e.index for e in stored.entries][:1] == [snap + 1] or snap == applied
        # alone, without a quorum, a node is back at its snapshot plus its committed WAL
        alone = await start_node(nursery, spec, "n1")
        with trio.fail_after(30):
            while alone.applied < before["n1"][1]:
                await trio.sleep(0.01)
        assert alone.snapshots_restored == 1 and _core(alone).snapshot_index == before["n1"][0]
        assert _data(alone) == want
        rest = await start_nodes(nursery, spec, ["n2", "n3"])
        nodes = {"n1": alone, **rest}
        leader = await wait_leader(nodes, timeout=30)
        await leader.submit(put("after", "restart"), timeout=30)
        for n in nodes.values():
            await n.wait_applied(leader.applied, timeout=30)
            assert _data(n) == {**want, "after": "restart"}
            assert await n.read(get("k6"), timeout=30) == want["k6"]
        nursery.cancel_scope.cancel()
