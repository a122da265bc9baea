"""A follower that lost its log after acknowledging entries (memory storage restarted,
a wiped disk) is repaired by the leader instead of being refused forever.

The leader keeps the follower's old match index; the empty follower rejects every
append and heartbeat at that index (``log-mismatch``). Before the fix the leader took
each rejection at or below the match index for a stale one and never backed off: the
follower stayed at commit 0 until leadership moved. A heartbeat only ever names an
index the follower acknowledged in this term, so a rejected heartbeat is proof that
the follower lost those entries: the leader resets its progress and probes from the
rejection's hint; log matching (or a snapshot) repairs the follower.
"""

from __future__ import annotations

import random

import pytest

from ruflo_consensus.core.base import Proposal, Role
from ruflo_consensus.core.raft import RaftConfig, RaftCore
from ruflo_consensus.core.raft.progress import ProgressState
from ruflo_consensus.statemachine import KVStateMachine, SessionTable
from ruflo_consensus.storage import MemoryStorage
from tests.helpers.raft_harness import Harness


def _put(h: Harness, leader: str, i: int) -> None:
    h.cores[leader].propose(Proposal("c", i, {"op": "put", "key": f"k{i}", "value": str(i)}))


def _wipe(h: Harness, victim: str, *, join: bool) -> None:
    """Replace ``victim``'s storage by an empty one and restart it from that."""
    h.storage[victim] = MemoryStorage()
    h.cores[victim] = RaftCore(victim, h.bootstrap, random.Random(7), h.config, join=join)
    h.machines[victim] = SessionTable(KVStateMachine())
    h.applied[victim] = []


@pytest.mark.parametrize("join", [False, True], ids=["as-voter", "as-spare"])
@pytest.mark.parametrize("compact", [False, True], ids=["log", "snapshot"])
def test_leader_repairs_a_follower_that_lost_acknowledged_entries(
    join: bool, compact: bool
) -> None:
    config = RaftConfig(snapshot_entries=5 if compact else 0)
    h = Harness(3, seed=1, config=config, compact=compact)
    leader = h.elect()
    for i in range(12):
        _put(h, leader, i)
    h.tick(5)
    victim = next(n for n in h.ids if n != leader)
    last = h.cores[leader].last_index
    assert h.cores[victim].commit == last
    assert h.cores[leader].progress[victim].match == last

    _wipe(h, victim, join=join)
    assert h.cores[victim].last_index == 0
    # a few heartbeat intervals: the follower must be repaired, not refused forever
    h.tick(20 * config.heartbeat_ticks)
    assert h.cores[leader].role is Role.LEADER, "the repair must not need a new leader"
    assert h.cores[victim].commit == h.cores[leader].commit == h.cores[leader].last_index
    rejected = h.cores[victim].rejected.get("log-mismatch", 0)
    assert rejected <= 4, f"the follower refused {rejected} appends"
    pr = h.cores[leader].progress[victim]
    assert pr.match == h.cores[leader].last_index and pr.state is ProgressState.REPLICATE
    # and new writes reach it again
    _put(h, leader, 99)
    h.tick(3)
    assert h.cores[victim].commit == h.cores[leader].last_index
    assert h.machines[victim].machine.apply({"op": "get", "key": "k99"}) == "99"


def test_a_stale_append_rejection_below_match_is_still_ignored() -> None:
    """An append's rejection (not a heartbeat's) may be older than a later success: it
    changes nothing, as before."""
    from ruflo_consensus.core.raft import AppendResponse

    h = Harness(3, seed=1)
    leader = h.elect()
    for i in range(4):
        _put(h, leader, i)
    h.tick(3)
    victim = next(n for n in h.ids if n != leader)
    core = h.cores[leader]
    pr = core.progress[victim]
    before = (pr.match, pr.next, pr.state)
    core.step(AppendResponse(victim, leader, core.term, False, pr.match - 1, 1, 0))
    assert (pr.match, pr.next, pr.state) == before
