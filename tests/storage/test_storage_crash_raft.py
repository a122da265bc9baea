"""Crash a real Raft node at every write point of its WAL, restart it, and check the cluster.

One node of a three-node cluster (the leader, or a follower) persists through a
FileStorage on a SimDisk with a :class:`FaultPlan`; the others use memory. A client
writes through whoever leads, with snapshots every few entries, so the victim's WAL
rotates segments, stores snapshots and compacts. When the plan fires the victim dies
mid-``save()``; the disk then keeps every written byte, loses every unsynced one, or a
random part of them. The victim reopens its directory (the real recovery code) and
rejoins. Then:

* the recovered WAL holds every entry the victim had acknowledged to a leader, and every
  vote it had granted (persist-before-send held across the crash);
* every write the client saw acknowledged is in every node's state machine;
* the victim caught up: same state, same commit as the leader.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from ruflo_consensus.core.base import (
    Message,
    NotLeader,
    Persist,
    Proposal,
    ProposalDropped,
    Role,
)
from ruflo_consensus.core.raft import (
    AppendResponse,
    InstallSnapshotResponse,
    RaftConfig,
    VoteResponse,
)
from ruflo_consensus.storage import (
    FaultPlan,
    FileStorage,
    RecordingHook,
    SimDisk,
    SimulatedCrash,
    WritePoint,
)
from ruflo_consensus.storage.faults import TEAR_POINTS
from tests.helpers.raft_harness import Harness

CFG = RaftConfig(snapshot_entries=6, snapshot_bytes=0, snapshot_chunk_bytes=64)
SEGMENT = 700
WRITES = 40


class CrashHarness(Harness):
    """A cluster whose ``victim`` persists to a crashable FileStorage."""

    def __init__(self, role: str, hook: Any, mode: str, send_first: bool = False) -> None:
        super().__init__(3, seed=11, config=CFG, compact=True)
        self.send_before_persist = send_first
        self.disk = SimDisk()
        self.mode = mode
        self.rand = random.Random(5)
        self.victim = ""
        self.acked = 0  # highest index the victim told a leader it holds
        self.granted: dict[int, str] = {}  # votes the victim granted, by term
        self.crashes = 0
        first = self.elect()
        follower = self.ids[(self.ids.index(first) + 1) % 3]
        self.victim = first if role == "leader" else follower
        # the victim moves to a file WAL (what memory held so far is written there first)
        old = self.storage[self.victim].load()
        assert old.snapshot is None  # only the election so far
        wal = FileStorage("/v", fs=self.disk, segment_bytes=SEGMENT)
        wal.save(Persist(hard_state=old.hard_state, entries=old.entries))
        wal.close()
        wal = FileStorage("/v", fs=self.disk, segment_bytes=SEGMENT, faults=hook)
        self.storage[self.victim] = wal  # type: ignore[assignment]

    def sent(self, nid: str, messages: list[Message]) -> None:
        if nid != self.victim:
            return
        for m in messages:
            if (isinstance(m, AppendResponse) and m.success) or (
                isinstance(m, InstallSnapshotResponse) and m.done
            ):
                self.acked = max(self.acked, m.index)
            elif isinstance(m, VoteResponse) and m.granted and not m.pre_vote:
                self.granted[m.term] = m.dst

    def flush(self, nid: str) -> None:
        if nid in self.down:
            return
        try:
            super().flush(nid)
        except SimulatedCrash:
            self.crash()

    def crash(self) -> None:
        self.crashes += 1
        self.down.add(self.victim)
        self.queue = [m for m in self.queue if m.dst != self.victim]
        if self.mode == "drop":
            self.disk.crash()
        elif self.mode == "random":
            self.disk.crash(self.rand)

    def restart_victim(self) -> None:
        wal = FileStorage("/v", fs=self.disk, segment_bytes=SEGMENT)
        stored = wal.load()
        # nothing the victim acknowledged or promised before it died is gone
        covered = max(
            stored.snapshot.index if stored.snapshot else 0,
            stored.entries[-1].index if stored.entries else 0,
        )
        assert covered >= self.acked, f"acknowledged {self.acked}, recovered only {covered}"
        hs = stored.hard_state
        for term, candidate in self.granted.items():
            kept = hs is not None and (hs.term > term or (hs.term, hs.vote) == (term, candidate))
            assert kept, f"the vote for {candidate} in term {term} was lost: {hs}"
        self.storage[self.victim] = wal  # type: ignore[assignment]
        self.restart(self.victim)


def run_cluster(role: str, hook: Any, mode: str = "keep", send_first: bool = False) -> CrashHarness:
    """Write WRITES commands through the leader, crash/restart the victim if the hook fires."""
    h = CrashHarness(role, hook, mode, send_first)
    acknowledged: list[int] = []
    down_since: int | None = None
    for i in range(WRITES):
        leaders = h.leaders()
        if not leaders:
            h.tick(5)
            continue
        leader = leaders[0]
        try:
            h.cores[leader].propose(
                Proposal("c1", i + 1, {"op": "put", "key": f"k{i}", "value": str(i)})
            )
        except (NotLeader, ProposalDropped):
            continue
        h.run()
        h.tick(1)
        # the client is answered once the leader applied the write
        if any(e.proposal and e.proposal.seq == i + 1 for e in h.applied[leader]):
            acknowledged.append(i)
        if h.victim in h.down:
            down_since = i if down_since is None else down_since
            if i - down_since >= 3:
                h.restart_victim()
                down_since = None
    if h.victim in h.down:
        h.restart_victim()
    for _ in range(60):
        h.tick(1)
        leaders = h.leaders()
        if leaders and all(h.cores[n].commit == h.cores[leaders[0]].commit for n in h.ids):
            break
    (leader,) = h.leaders()
    states = {n: h.machines[n].machine.data for n in h.ids}  # type: ignore[attr-defined]
    for i in acknowledged:
        for n in h.ids:
            assert states[n].get(f"k{i}") == str(i), f"acknowledged write {i} lost on {n}"
    assert states[h.victim] == states[leader], "the victim did not catch up"
    assert h.cores[h.victim].commit == h.cores[leader].commit
    assert h.cores[h.victim].role is not Role.LEADER or h.victim == leader
    return h


def _cases() -> list[Any]:
    cases = []
    for role in ("leader", "follower"):
        hook = RecordingHook()
        run_cluster(role, hook)
        for point, n in sorted(hook.counts.items()):
            for occurrence in sorted({1, (n + 1) // 2, n}):
                tears = [1, None, -1] if point in TEAR_POINTS else [None]
                for tear in tears:
                    label = f"{role}-{point.value}#{occurrence}/{n}" + (
                        f"-tear{tear}" if point in TEAR_POINTS else ""
                    )
                    cases.append(pytest.param(role, point, occurrence, tear, id=label))
    return cases


CASES = _cases()


def test_the_cluster_run_reaches_every_write_point() -> None:
    for role in ("leader", "follower"):
        hook = RecordingHook()
        h = run_cluster(role, hook)
        assert h.crashes == 0
        expected = set(WritePoint) - {WritePoint.RECOVER_BEFORE_TRUNCATE}
        assert set(hook.counts) == expected, set(expected) - set(hook.counts)
        assert hook.counts[WritePoint.SNAP_BEFORE_WRITE] >= 3
        assert hook.counts[WritePoint.SEGMENT_BEFORE_CREATE] >= 3


@pytest.mark.parametrize(("role", "point", "occurrence", "tear"), CASES)
@pytest.mark.parametrize("mode", ["keep", "drop", "random"])
def test_a_node_crashed_at_any_write_point_loses_nothing_acknowledged_and_rejoins(
    role: str, point: WritePoint, occurrence: int, tear: int | None, mode: str
) -> None:
    plan = FaultPlan(point, occurrence, tear)
    h = run_cluster(role, plan, mode)
    assert plan.fired and h.crashes == 1


def test_a_driver_that_sends_before_it_persists_is_caught() -> None:
    # A follower that acknowledges entries before they are durable, then loses power.
    caught = 0
    for point in (WritePoint.WAL_BEFORE_WRITE, WritePoint.WAL_AFTER_WRITE):
        for occurrence in (3, 10, 20):
            try:
                run_cluster("follower", FaultPlan(point, occurrence), "drop", send_first=True)
            except AssertionError as exc:
                assert "acknowledged" in str(exc) or "lost" in str(exc), exc
                caught += 1
    assert caught >= 3, caught
    # the same crashes with the correct order lose nothing
    for point in (WritePoint.WAL_BEFORE_WRITE, WritePoint.WAL_AFTER_WRITE):
        for occurrence in (3, 10, 20):
            run_cluster("follower", FaultPlan(point, occurrence), "drop")
