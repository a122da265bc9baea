"""Membership changes on real nodes in one process: spares join, the leader leaves.

A spec node with ``join = true`` is a spare: linked and keyed like the others, outside the
bootstrap configuration. These tests add one to a running 3-node cluster while writes go
on, restart it once it has joined, remove the leader itself, and check that refused
changes come back typed and change nothing — through the node API, the client protocol
and the blocking facade.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ruflo_consensus.core.base import ConfChangeRefused, Role
from ruflo_consensus.runtime import (
    BlockingNode,
    ClientError,
    ClusterClient,
    Node,
    NotMemberError,
    SpecError,
    load_spec,
    write_local_spec,
)
from ruflo_consensus.statemachine import KVStateMachine
from tests.helpers.runtime_helpers import (
    FAST_RAFT,
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

SPARE = {"n4": {"join": True}}


class Writer:
    """Writes ``prefix0, prefix1, …`` through one node until stopped; keeps what was acked."""

    def __init__(self, node: Node, prefix: str) -> None:
        self.node, self.prefix = node, prefix
        self.acked: dict[str, str] = {}
        self.stop = trio.Event()
        self.done = trio.Event()

    async def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                key, value = f"{self.prefix}{i}", str(i)
                assert await self.node.submit(put(key, value), timeout=PATIENCE) is None
                self.acked[key] = value
                i += 1
        finally:
            self.done.set()

    async def more(self, count: int) -> None:
        """Wait until ``count`` more writes were acknowledged."""
        target = len(self.acked) + count
        await wait_until(lambda: len(self.acked) >= target)

    async def finish(self) -> dict[str, str]:
        self.stop.set()
        with trio.fail_after(PATIENCE):
            await self.done.wait()
        return self.acked


def _data(node: Node) -> dict[str, str]:
    machine = node.table.machine
    assert isinstance(machine, KVStateMachine)
    return machine.data


def test_a_spec_node_with_join_is_a_spare_outside_the_bootstrap_voters(tmp_path: Path) -> None:
    spec = load_spec(write_local_spec(tmp_path, "mesh", 4, node_extra=SPARE))
    assert spec.voters == ["n1", "n2", "n3"] and spec.ids == ["n1", "n2", "n3", "n4"]
    assert spec.spares == {"n4"} and spec.is_spare("n4") and not spec.is_spare("n1")
    bad = write_local_spec(tmp_path / "bad", "mesh", 2, node_extra={"n2": {"join": "yes"}})
    with pytest.raises(SpecError, match="join must be true or false"):
        load_spec(bad)
    every = {"n1": {"join": True}, "n2": {"join": True}}
    with pytest.raises(SpecError, match="needs a voter"):
        load_spec(write_local_spec(tmp_path / "all", "mesh", 2, node_extra=every))


async def test_a_spare_joins_while_writes_go_on_and_gets_every_write(tmp_path: Path) -> None:
    # snapshots every 16 entries: the learner catches up by InstallSnapshot plus the log
    spec = local_spec(tmp_path, "mesh", 4, node_extra=SPARE, raft={"snapshot_entries": 16})
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        voters = {n: nodes[n] for n in spec.voters}
        leader = await wait_leader(voters)
        spare = nodes["n4"]
        assert spare.member_role == "none" and spare.status()["member"] == "none"
        assert spare.role is Role.FOLLOWER and spare.core.term == 0  # it never campaigned
        with pytest.raises(NotMemberError):
            await spare.submit(put("x", "y"))  # a spare serves no client: ask a member
        follower = next(n for n in voters.values() if n is not leader)
        writer = Writer(follower, "w")
        nursery.start_soon(writer.run)
        await writer.more(24)
        # asked of a follower: forwarded to the leader
        conf = await follower.change_membership("add-learner", "n4", timeout=PATIENCE)
        assert conf["voters"] == ["n1", "n2", "n3"] and conf["learners"] == ["n4"]
        await wait_until(lambda: spare.member_role == "learner")
        await writer.more(10)
        with trio.fail_after(PATIENCE):
            while True:
                try:
                    conf = await follower.change_membership("promote-learner", "n4")
                    break
                except ConfChangeRefused as exc:  # typed across the forward too
                    assert exc.reason == "learner-behind"
                    await trio.sleep(0.05)
        assert conf["voters"] == ["n1", "n2", "n3", "n4"] and conf["learners"] == []
        assert leader.status()["voters"] == ["n1", "n2", "n3", "n4"]
        await wait_until(lambda: spare.member_role == "voter" and spare.core.is_voter)
        await writer.more(10)  # writes go on with four voters
        acked = await writer.finish()
        leader = await wait_leader(nodes)
        await spare.wait_applied(leader.core.commit, timeout=PATIENCE)
        assert _data(spare).items() >= acked.items()  # every acknowledged write, the new node
        last = max(acked, key=lambda k: int(k[1:]))
        assert await spare.read(get(last), timeout=PATIENCE) == acked[last]
        # restarted from its WAL, the node that has joined comes back as a voter at once
        await halt(spare)
        again = await start_node(nursery, spec, "n4")
        assert again.member_role == "voter" and again.core.is_voter
        assert await again.submit(put("after-restart", "1"), timeout=PATIENCE) is None
        await again.wait_applied(leader.core.commit, timeout=PATIENCE)
        assert _data(again).items() >= acked.items()
        nursery.cancel_scope.cancel()


async def test_the_leader_removes_itself_and_the_rest_elect_a_new_one(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        old = await wait_leader(nodes)
        rest = {n: node for n, node in nodes.items() if node is not old}
        writer = Writer(next(iter(rest.values())), "r")
        nursery.start_soon(writer.run)
        await writer.more(10)
        conf = await old.change_membership("remove-voter", old.node_id, timeout=PATIENCE)
        assert conf["voters"] == [n for n in spec.ids if n != old.node_id]
        new = await wait_leader(rest)
        assert new is not old
        await writer.more(10)  # the writes that were in flight went on to the new leader
        acked = await writer.finish()
        await new.wait_applied(new.core.commit, timeout=PATIENCE)
        for node in rest.values():
            await node.wait_applied(new.core.commit, timeout=PATIENCE)
            assert _data(node).items() >= acked.items()  # no acknowledged write lost
        assert new.status()["voters"] == sorted(rest)
        # the removed node keeps running, harmlessly: it never leads or bumps the term again
        assert old.member_role == "none" and old.role is not Role.LEADER
        with pytest.raises(NotMemberError):
            await old.read(get("r0"))
        term = new.core.term
        await trio.sleep(3 * FAST_RAFT["election_timeout_max_ms"] / 1000)
        assert new.role is Role.LEADER and new.core.term == term and old.role is not Role.LEADER
        assert await new.submit(put("later", "1"), timeout=PATIENCE) is None
        nursery.cancel_scope.cancel()


REFUSALS = [
    ("add-learner", "n2", "already-member"),  # an existing voter
    ("remove-voter", "n4", "unknown-node"),  # the spare is no member yet
    ("remove-learner", "n1", "unknown-node"),  # a voter, not a learner
    ("promote-learner", "n4", "unknown-node"),  # not a learner
    ("remove-voter", "n9", "unknown-node"),  # not even in the spec
    ("add-learner", "n9", "not-in-spec"),  # no keys, no endpoint: nothing to link to
    ("add-voter", "n4", "learner-first"),
    ("rename", "n4", "bad-kind"),
]


async def test_refused_changes_are_typed_and_change_nothing(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 4, node_extra=SPARE, runtime={"data_dir": None})
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader({n: nodes[n] for n in spec.voters})
        await leader.submit(put("a", "1"))  # the leader's term is committed
        follower = nodes["n2"] if leader.node_id != "n2" else nodes["n3"]
        before = (leader.core.configuration, leader.core.conf_index, leader.core.last_index)
        for node in (leader, follower):  # made here, and forwarded
            for kind, target, reason in REFUSALS:
                with pytest.raises(ConfChangeRefused) as refused:
                    await node.change_membership(kind, target, timeout=PATIENCE)
                assert refused.value.reason == reason, (node.node_id, kind, target)
        client = ClusterClient(spec)  # the client protocol: REFUSED with the reason
        with pytest.raises(ClientError) as exc:
            await client.change_membership("add-learner", "n1")
        assert exc.value.code == "REFUSED" and exc.value.reason == "already-member"
        after = (leader.core.configuration, leader.core.conf_index, leader.core.last_index)
        assert after == before and leader.role is Role.LEADER
        assert all(n.member_role == "voter" for n in nodes.values() if n.node_id != "n4")
        nursery.cancel_scope.cancel()


def test_blocking_node_changes_membership(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 2, node_extra={"n2": {"join": True}})
    with BlockingNode(spec, "n1", KVStateMachine()) as node:  # one voter: it leads alone
        node.submit(put("a", "1"), timeout=PATIENCE)
        conf = node.change_membership("add-learner", "n2", timeout=PATIENCE)
        assert conf["voters"] == ["n1"] and conf["learners"] == ["n2"]
        with pytest.raises(ConfChangeRefused) as refused:
            node.change_membership("remove-voter", "n1", timeout=PATIENCE)
        assert refused.value.reason == "no-voters"
        conf = node.change_membership("remove-learner", "n2", timeout=PATIENCE)
        assert conf["learners"] == [] and node.status()["member"] == "voter"
