"""Snapshots in the runtime: compaction, InstallSnapshot catch-up, restart from snapshot + WAL."""

from __future__ import annotations

from pathlib import Path

import trio

from ruflo_consensus.core.base import Role
from ruflo_consensus.core.raft import RaftCore
from ruflo_consensus.runtime import Node
from ruflo_consensus.statemachine import KVStateMachine, SessionTable
from ruflo_consensus.storage import FileStorage
from tests.helpers.runtime_helpers import (
    PATIENCE,
    get,
    halt,
    local_spec,
    put,
    start_node,
    start_nodes,
    wait_leader,
    wait_until,
)

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
        leader = await wait_leader(nodes)
        lagger = next(n for n in nodes.values() if n is not leader)
        for i in range(3):
            await leader.submit(put(f"k{i}", str(i)), timeout=30)
        await lagger.wait_applied(leader.applied, timeout=PATIENCE)
        behind = _core(lagger).last_index
        assert _core(lagger).snapshot_index == 0  # under snapshot_entries: no snapshot yet
        await halt(nodes.pop(lagger.node_id))
        # one session writes x many times: its last (client, seq) lives only in snapshots
        for seq in range(1, 21):
            await leader.submit_as("writer", seq, put("x", str(seq)), 30)
        for i in range(3, 8):
            await leader.submit(put(f"k{i}", str(i)), timeout=30)
        assert leader.snapshots_taken >= 2
        assert _core(leader).first_index > behind + 1  # what the lagger needs next is gone
        back = await start_node(nursery, spec, lagger.node_id)
        nodes[back.node_id] = back
        await back.wait_applied(leader.applied, timeout=PATIENCE)
        assert back.snapshots_restored >= 1 and _core(back).snapshot_index > behind
        assert _data(back) == _data(leader)
        assert await back.read(get("k7"), timeout=30) == "7"
        assert await back.read(get("x"), timeout=30) == "20"
        # the session table came with the snapshot: as leader, the caught-up node answers a
        # retry of the writer's last request from it instead of applying it again
        with trio.fail_after(PATIENCE):
            while back.role is not Role.LEADER:
                if leader.role is Role.LEADER:
                    leader.transfer_leadership(back.node_id)
                await trio.sleep(0.3)
        assert await back.submit_as("writer", 20, put("x", "again"), 30) is None
        assert await back.read(get("x"), timeout=30) == "20"
        assert back.table.duplicate_count >= 1
        nursery.cancel_scope.cancel()


async def test_restarted_nodes_recover_from_snapshot_plus_wal(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "ring", 3, raft=SNAP)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes)
        for i in range(23):
            await leader.submit(put(f"k{i % 7}", str(i)), timeout=30)
        for n in nodes.values():
            await n.wait_applied(leader.applied, timeout=PATIENCE)
        want = _data(leader)
        for n in nodes.values():
            await halt(n)
        # each WAL holds a snapshot and the entries after it; what a node must come back
        # to is exactly that snapshot with its committed entries applied on top
        stored = {}
        for node_id in spec.ids:
            data_dir = spec.data_dir(node_id)
            assert data_dir is not None
            storage = FileStorage(str(data_dir))
            stored[node_id] = storage.load()
            storage.close()
        for st in stored.values():
            assert st.snapshot is not None and st.snapshot.index > 0
            assert st.hard_state is not None and st.hard_state.commit >= st.snapshot.index
            assert [e.index for e in st.entries] == list(
                range(st.snapshot.index + 1, st.snapshot.index + 1 + len(st.entries))
            )
        n1 = stored["n1"]
        assert n1.snapshot is not None and n1.hard_state is not None
        commit = n1.hard_state.commit
        replay = SessionTable(KVStateMachine())
        replay.restore(n1.snapshot.data)
        for e in n1.entries:
            if e.index <= commit and e.proposal is not None:
                replay.apply(e.proposal.client, e.proposal.seq, e.proposal.command)
        # alone, without a quorum, n1 is back at its snapshot plus its committed WAL
        alone = await start_node(nursery, spec, "n1")
        await wait_until(lambda: alone.applied >= commit)
        assert alone.snapshots_restored == 1
        assert _core(alone).snapshot_index == n1.snapshot.index
        assert isinstance(replay.machine, KVStateMachine)
        assert _data(alone) == replay.machine.data
        assert alone.table.sessions == replay.sessions
        rest = await start_nodes(nursery, spec, ["n2", "n3"])
        nodes = {"n1": alone, **rest}
        leader = await wait_leader(nodes)
        await leader.submit(put("after", "restart"), timeout=30)
        for n in nodes.values():
            await n.wait_applied(leader.applied, timeout=PATIENCE)
            assert _data(n) == {**want, "after": "restart"}
            assert await n.read(get("k6"), timeout=30) == want["k6"]
        nursery.cancel_scope.cancel()
