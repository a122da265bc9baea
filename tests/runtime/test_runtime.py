"""The trio driver in one process: relays, tampering, restarts, crashes, embedding."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from ruflo_consensus.core.base import Persist, Role, TransferRefused
from ruflo_consensus.core.raft import RaftCore
from ruflo_consensus.runtime import BlockingNode, Node, NodeError, SubmitTimeout, open_node
from ruflo_consensus.runtime.node import default_core_factory
from ruflo_consensus.statemachine import CommandRejected, KVStateMachine
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

ROOT = Path(__file__).resolve().parents[2]


async def test_ring_nodes_reach_non_neighbours_through_relays(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "ring", 5, runtime={"data_dir": None})
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes)
        # in a 5-ring the leader has two non-neighbours; they only hear it through relays
        far = [n for n in nodes.values() if not spec.topology.linked(leader.node_id, n.node_id)]
        far = [n for n in far if n is not leader]
        assert len(far) == 2
        for i in range(5):
            await far[0].submit(put(f"k{i}", str(i)))  # a far node forwards to the leader
        assert await far[1].read(get("k4")) == "4"
        for n in far:
            await n.wait_applied(leader.applied, timeout=PATIENCE)
            assert isinstance(n.table.machine, KVStateMachine)
            assert n.table.machine.data["k3"] == "3"
        assert sum(n.relayed for n in nodes.values()) > 0
        assert all(not n.rejected for n in nodes.values())
        nursery.cancel_scope.cancel()


async def test_ring_routes_the_long_way_round_a_dead_node(tmp_path: Path) -> None:
    """n3 dies in a 5-ring; its neighbours n2 (the leader) and n4 talk via n1 and n5."""
    spec = local_spec(tmp_path, "ring", 5, runtime={"data_dir": None, "link_state_s": 0.2})
    topo = spec.topology
    assert topo.next_hop("n2", "n4") == "n3" and topo.next_hop("n4", "n2") == "n3"
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes)
        await leader.submit(put("warm", "up"))
        with trio.fail_after(PATIENCE):
            while nodes["n2"].role is not Role.LEADER:
                lead = next((n for n in nodes.values() if n.role is Role.LEADER), None)
                if lead is not None and lead.node_id != "n2":
                    with contextlib.suppress(NodeError, TransferRefused):
                        lead.transfer_leadership("n2")
                await trio.sleep(0.2)
        n2, n4 = nodes["n2"], nodes["n4"]
        await wait_leader(nodes)
        await halt(nodes.pop("n3"))
        # both neighbours notice the dead links
        await wait_until(lambda: n2.transport.links["n3"].down and n4.transport.links["n3"].down)
        relayed = {n: nodes[n].relayed for n in ("n1", "n5")}
        term = n2.core.term
        for i in range(5):
            assert await n4.submit(put(f"k{i}", str(i)), timeout=30) is None  # forwarded to n2
        assert await n4.read(get("k4"), timeout=30) == "4"
        await n4.wait_applied(n2.applied, timeout=PATIENCE)
        assert isinstance(n4.table.machine, KVStateMachine)
        assert n4.table.machine.data["k3"] == "3"
        # the long way round carried it: n1 and n5 relayed, and nobody had to be re-elected
        assert all(nodes[n].relayed > relayed[n] for n in ("n1", "n5"))
        assert n2.role is Role.LEADER and n2.core.term == term and n4.leader == "n2"
        assert ["n2", "n3"] in n4.status()["down_links"]  # n2's announcement reached n4
        nursery.cancel_scope.cancel()


def _tamper(frame: bytes) -> bytes:
    """A malicious relay: change the payload, keep the signature."""
    body, sig, *hops = msgpack.unpackb(frame)
    fields = msgpack.unpackb(body)
    fields[6] = fields[6][:-1] + bytes([fields[6][-1] ^ 1]) if fields[6] else b"\x00"
    return msgpack.packb([msgpack.packb(fields, use_bin_type=True), sig, *hops], use_bin_type=True)


async def test_a_tampered_relayed_frame_is_rejected(tmp_path: Path) -> None:
    """Every relay tampers: the leader's two non-neighbours in a 5-ring get only forgeries."""
    spec = local_spec(tmp_path, "ring", 5, runtime={"data_dir": None})
    tampered = [0]

    def hook(frame: bytes) -> bytes:
        tampered[0] += 1
        return _tamper(frame)

    async with trio.open_nursery() as nursery:
        options = {n: {"relay_hook": hook} for n in spec.ids}
        nodes = await start_nodes(nursery, spec, options=options)
        with trio.fail_after(PATIENCE):
            while not any(n.role.value == "leader" for n in nodes.values()):
                await trio.sleep(0.02)
        leader = next(n for n in nodes.values() if n.role.value == "leader")
        near = [nodes[p] for p in spec.topology.neighbours(leader.node_id)]
        far = [n for n in nodes.values() if n is not leader and n not in near]
        # the leader and its two neighbours are a majority: writes still commit
        await leader.submit(put("a", "1"))
        await wait_until(lambda: all(n.rejected["bad-signature"] > 0 for n in far))
        assert tampered[0] > 0
        for n in far:  # every relayed frame was refused
            assert n.applied == 0 and n.leader is None  # nothing a relay carried got in
            assert isinstance(n.table.machine, KVStateMachine)
            assert "a" not in n.table.machine.data
        for n in near:
            await n.wait_applied(leader.applied, timeout=PATIENCE)
        nursery.cancel_scope.cancel()


async def test_restarted_node_catches_up_from_its_wal(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes.values() if n is not leader)
        for i in range(3):
            await leader.submit(put("k", str(i)))
        await follower.wait_applied(leader.applied, timeout=PATIENCE)
        await halt(follower)
        for i in range(3, 8):
            await leader.submit(put("k", str(i)))
        restarted = await start_node(nursery, spec, follower.node_id)
        # its WAL gives back the first entries at once; the rest comes from the leader
        await restarted.wait_applied(leader.applied, timeout=PATIENCE)
        assert isinstance(restarted.table.machine, KVStateMachine)
        assert restarted.table.machine.data["k"] == "7"
        assert await restarted.read(get("k")) == "7"
        nursery.cancel_scope.cancel()


async def test_rejected_commands_and_timeouts_are_typed(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"data_dir": None})
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec, ["n1"])  # no quorum: nothing can commit
        with pytest.raises(SubmitTimeout):
            await nodes["n1"].submit(put("a", "1"), timeout=0.5)  # exact (a cancel scope)
        start = trio.current_time()
        with trio.fail_after(PATIENCE), pytest.raises(SubmitTimeout):
            await nodes["n1"].submit(put("a", "2"), timeout=3.5)  # checked by the sweeper
        assert trio.current_time() - start >= 3.5
        nodes.update(await start_nodes(nursery, spec, ["n2", "n3"]))
        leader = await wait_leader(nodes)
        result = await leader.submit({"op": "put", "key": "a"})  # no value
        assert isinstance(result, CommandRejected) and result.code == "BAD_ARGUMENT"
        nursery.cancel_scope.cancel()


class _ExplodingCore(RaftCore):
    explode_after = 20

    def tick(self) -> None:
        self.explode_after -= 1
        if self.explode_after == 0:
            raise RuntimeError("core bug")
        super().tick()


async def test_a_crashed_task_takes_the_node_down_loudly(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"data_dir": None})

    def factory(*args: Any, **kwargs: Any) -> Any:
        core = default_core_factory(*args, **kwargs)
        core.__class__ = _ExplodingCore
        return core

    crashed = False
    try:
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, spec, "n1", core_factory=factory)
            assert isinstance(node, Node)
            await trio.sleep(PATIENCE)
            pytest.fail("the node kept running after its tick task crashed")
    except* RuntimeError as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        crashed = str(leaf) == "core bug"
    assert crashed


async def test_open_node_embedding_api(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "star", 3, runtime={"data_dir": None})
    async with trio.open_nursery() as nursery:
        others = await start_nodes(nursery, spec, ["n2", "n3"])
        async with open_node(spec.path, "n1", KVStateMachine()) as node:  # type: ignore[arg-type]
            await wait_leader({**others, "n1": node})
            assert await node.submit(put("a", "b")) is None
            assert await node.read(get("a")) == "b"
            assert await node.submit({"op": "cas", "key": "a", "old": "b", "new": "c"}) is True
        nursery.cancel_scope.cancel()


def test_blocking_facade_from_threads(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"data_dir": None})
    nodes = [BlockingNode(spec, n, KVStateMachine()) for n in spec.ids]
    try:
        for n in nodes:
            n.start()
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            try:
                nodes[i].submit(put(f"t{i}", str(i)), timeout=PATIENCE)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(2 * PATIENCE)
        assert not errors
        reads = [nodes[0].read(get(f"t{i}"), timeout=PATIENCE) for i in range(3)]
        assert reads == ["0", "1", "2"]
        assert nodes[1].status()["applied"] >= 3
    finally:
        for n in nodes:
            n.close()


def test_embedding_doc_example_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embedded_kv.py")],
        capture_output=True,
        text=True,
        timeout=2 * PATIENCE,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trio: a = 1" in proc.stdout
    assert "asyncio: counter = 3" in proc.stdout


class _GatedStorage(FileStorage):
    """A file WAL whose saves of new entries can be held back (a slow fsync, on demand)."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()

    def save(self, persist: Persist) -> None:
        if persist.entries and not self.gate.is_set():
            self.blocked.set()
            self.gate.wait(2 * PATIENCE)
        super().save(persist)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial"])
async def test_nothing_acts_on_an_entry_before_the_leaders_fsync(
    tmp_path: Path, parallel: bool
) -> None:
    """While the leader's fsync of an entry hangs, followers may already hold the entry
    (parallel_leader_append) but nobody commits, applies or acknowledges it."""
    # elections far slower than the window, so that the followers keep their leader while
    # its fsync hangs (a hung leader sends no heartbeats)
    raft = {"election_timeout_min_ms": 2000, "election_timeout_max_ms": 3000}
    runtime = {"parallel_leader_append": parallel}
    spec = local_spec(tmp_path, "mesh", 3, raft=raft, runtime=runtime)
    storages = {}
    for n in spec.ids:
        data_dir = spec.data_dir(n)
        assert data_dir is not None
        storages[n] = _GatedStorage(str(data_dir))
    async with trio.open_nursery() as nursery:
        options = {n: {"storage": storages[n]} for n in spec.ids}
        nodes = await start_nodes(nursery, spec, options=options)
        leader = await wait_leader(nodes)
        await leader.submit(put("warm", "up"))
        followers = [n for n in nodes.values() if n is not leader]
        for f in followers:
            await f.wait_applied(leader.applied, timeout=PATIENCE)
        index = leader.core.last_index + 1  # type: ignore[attr-defined]
        term = leader.core.term
        acked: list[Any] = []

        async def write() -> None:
            acked.append(await leader.submit(put("x", "1")))

        gate = storages[leader.node_id].gate
        gate.clear()
        try:
            nursery.start_soon(write)
            await trio.to_thread.run_sync(storages[leader.node_id].blocked.wait, PATIENCE)
            if parallel:  # the followers got the entry while the leader's fsync runs
                await wait_until(
                    lambda: all(f.core.last_index >= index for f in followers)  # type: ignore[attr-defined]
                )
            await trio.sleep(0.3)  # the tick task runs on: nothing may act on the commit
            for f in followers:
                assert f.core.term == term and f.leader == leader.node_id
                assert f.core.commit < index and f.applied < index  # type: ignore[attr-defined]
                assert parallel or f.core.last_index < index  # type: ignore[attr-defined]
            assert not acked and leader.applied < index
        finally:
            gate.set()
        await wait_until(lambda: bool(acked))
        for f in followers:
            await f.wait_applied(index, timeout=PATIENCE)
            assert await f.read(get("x")) == "1"
        nursery.cancel_scope.cancel()
