"""ReadIndex, lease and follower reads; leadership transfer; flow control (back-pressure)."""

from __future__ import annotations

import random

import pytest

from ruflo_consensus.core.base import (
    Entry,
    HardState,
    Proposal,
    ProposalDropped,
    Role,
    TransferRefused,
)
from ruflo_consensus.core.raft import (
    AppendEntries,
    AppendResponse,
    RaftConfig,
    RaftCore,
    ReadIndexRequest,
    TimeoutNow,
    VoteResponse,
    entry_size,
)
from tests.helpers.broken_raft import LeaseIgnoresDrift
from tests.helpers.raft_harness import Harness


def _steady(n: int = 3, seed: int = 1, **cfg: object) -> tuple[Harness, str]:
    h = Harness(n, seed=seed, config=RaftConfig(**cfg))  # type: ignore[arg-type]
    leader = h.elect()
    h.tick(6)
    return h, leader


# ------------------------------------------------------------------ ReadIndex


def test_leader_read_index_waits_for_a_heartbeat_round_then_returns_commit() -> None:
    h, leader = _steady()
    core = h.cores[leader]
    core.read_index("r1")
    rd = core.ready()
    assert rd.reads == []  # not confirmed yet
    rounds = {m.round for m in rd.messages if isinstance(m, AppendEntries)}
    assert rounds == {core._read_only.round}  # an immediate heartbeat round went out
    h.queue.extend(rd.messages)
    h.run()
    assert [(r.ctx, r.index) for r in h.reads[leader]] == [("r1", core.commit)]


def test_isolated_leader_cannot_confirm_a_read() -> None:
    h, leader = _steady()
    h.isolate(leader)
    h.cores[leader].read_index("r1")
    h.run()
    h.tick(3, nodes=[leader])
    assert h.reads[leader] == []
    # when it steps down (check-quorum) the read is refused, never answered stale
    h.tick(40, nodes=[leader])
    assert [(r.ctx, r.index) for r in h.reads[leader]] == [("r1", -1)]


def test_read_on_a_fresh_leader_waits_for_its_first_commit() -> None:
    core = RaftCore(
        "n1",
        ["n1", "n2", "n3"],
        random.Random(0),
        hard_state=HardState(1, None, 1),
        entries=[Entry(1, 1, None)],
    )
    core._campaign(pre_vote=False)
    core.ready()
    core.step(VoteResponse("n2", "n1", 2, True, False))
    assert core.role is Role.LEADER and core.term_at(core.commit) != core.term
    core.read_index("early")
    rd = core.ready()
    assert rd.reads == [] and core._read_only.waiting  # the old commit could be stale
    noop = core.last_index
    core.step(AppendResponse("n2", "n1", 2, True, noop, 0, 0))  # the no-op commits
    assert core.commit == noop
    rd = core.ready()
    assert rd.reads == []  # now it needs a confirmed heartbeat round
    (hb,) = [
        m for m in rd.messages if isinstance(m, AppendEntries) and m.dst == "n2" and m.round > 0
    ]
    core.step(AppendResponse("n2", "n1", 2, True, noop, 0, 0, hb.round))
    assert [(r.ctx, r.index) for r in core.ready().reads] == [("early", noop)]


def test_follower_read_asks_the_leader() -> None:
    h, leader = _steady()
    for i in range(5):
        h.cores[leader].propose(Proposal("c", i + 1, i))
    h.run()
    h.tick(6)
    follower = next(n for n in h.ids if n != leader)
    h.cores[follower].read_index("fr")
    rd = h.cores[follower].ready()
    assert any(isinstance(m, ReadIndexRequest) for m in rd.messages)
    h.queue.extend(rd.messages)
    h.run()
    (state,) = h.reads[follower]
    assert state.ctx == "fr" and state.index == h.cores[leader].commit


def test_follower_read_without_a_leader_is_not_leader() -> None:
    h = Harness(3, seed=3)
    from ruflo_consensus.core.base import NotLeader

    with pytest.raises(NotLeader):
        h.cores["n1"].read_index("x")


def test_lease_read_is_immediate_while_the_lease_holds_and_not_after() -> None:
    h, leader = _steady(read_mode="lease")
    core = h.cores[leader]
    assert core.lease_valid()
    core.read_index("fast")
    assert [r.ctx for r in core.ready().reads] == ["fast"]
    h.isolate(leader)
    h.tick(core.config.lease_ticks + 1, nodes=[leader])
    assert not core.lease_valid()
    core.read_index("slow")
    assert core.ready().reads == []


def test_lease_is_shortened_by_the_drift_bound() -> None:
    # one tick of the followers' refusal is not a whole interval (see lease_ticks)
    assert RaftConfig(lease_drift_bound=0.0).lease_ticks == 14
    assert RaftConfig(lease_drift_bound=0.1).lease_ticks == 11  # (15 - 1) * 0.9 / 1.1
    with pytest.raises(ValueError):
        RaftConfig(read_mode="lease", check_quorum=False)
    with pytest.raises(ValueError):
        RaftConfig(lease_drift_bound=1.0)


# ------------------------------------------------------------------ leadership transfer


def test_transfer_to_a_caught_up_follower_hands_over_leadership() -> None:
    h, leader = _steady()
    target = next(n for n in h.ids if n != leader)
    old_term = h.cores[leader].term
    h.cores[leader].transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        h.cores[leader].propose(Proposal("c", 1, "x"))
    h.run()
    assert h.leaders() == [target]
    assert h.cores[target].term == old_term + 1
    assert h.cores[leader].transfer_target is None


def test_transfer_is_refused_when_the_target_is_behind() -> None:
    h, leader = _steady()
    target = next(n for n in h.ids if n != leader)
    h.isolate(target)
    h.cores[leader].propose(Proposal("c", 1, "x"))
    h.run()
    with pytest.raises(TransferRefused, match="behind"):
        h.cores[leader].transfer_leadership(target)
    assert h.cores[leader].transfer_target is None
    with pytest.raises(TransferRefused):
        h.cores[leader].transfer_leadership("nobody")
    with pytest.raises(TransferRefused):
        h.cores[target].transfer_leadership(leader)


def test_a_transfer_that_never_completes_is_abandoned() -> None:
    h, leader = _steady()
    target = next(n for n in h.ids if n != leader)
    h.cores[leader].transfer_leadership(target)
    h.run(drop=lambda m: isinstance(m, TimeoutNow))
    h.tick(h.cores[leader].config.election_ticks + 1)
    assert h.cores[leader].transfer_target is None
    h.cores[leader].propose(Proposal("c", 1, "x"))  # accepts proposals again


def test_transfer_vote_overrides_leader_stickiness() -> None:
    h, leader = _steady(5, seed=4)
    target = next(n for n in h.ids if n != leader)
    h.cores[leader].transfer_leadership(target)
    h.run()
    assert h.leaders() == [target]  # the others voted although they heard a leader recently


# ------------------------------------------------------------------ flow control


def test_proposals_past_the_uncommitted_bound_are_refused() -> None:
    h, leader = _steady(max_uncommitted_entries=5)
    follower_ids = [n for n in h.ids if n != leader]
    for f in follower_ids:
        h.isolate(f)
    core = h.cores[leader]
    for i in range(5):
        core.propose(Proposal("c", i + 1, i))
    before = core.last_index
    with pytest.raises(ProposalDropped, match="waiting to commit"):
        core.propose(Proposal("c", 6, 6))
    assert core.last_index == before  # nothing appended


def test_inflight_bytes_pause_replication() -> None:
    big = "x" * 1000
    h, leader = _steady(max_inflight=100, max_inflight_bytes=2500, max_batch_bytes=1200)
    core = h.cores[leader]
    follower = next(n for n in h.ids if n != leader)
    sent = []
    for i in range(6):
        core.propose(Proposal("c", i + 1, big))
        rd = core.ready()  # acknowledgements never delivered
        sent += [m for m in rd.messages if isinstance(m, AppendEntries) and m.dst == follower]
    pr = core.progress[follower]
    assert pr.inflight_bytes >= 2500 and len(sent) == 3
    assert all(len(m.entries) == 1 for m in sent)  # max_batch_bytes keeps batches to one
    assert entry_size(sent[0].entries[0]) > 1000


def test_flow_control_settings_are_validated() -> None:
    for bad in (
        {"max_inflight_bytes": 0},
        {"max_batch_bytes": 0},
        {"max_uncommitted_entries": 0},
        {"read_mode": "psychic"},
    ):
        with pytest.raises(ValueError):
            RaftConfig(**bad)  # type: ignore[arg-type]


def test_roles_after_transfer_are_consistent() -> None:
    h, leader = _steady()
    target = next(n for n in h.ids if n != leader)
    h.cores[leader].transfer_leadership(target)
    h.run()
    h.tick(10)
    assert h.cores[leader].role is Role.FOLLOWER and h.cores[leader].leader == target


def _lease_scenario(core_factory: type[RaftCore]) -> tuple[Harness, str, str]:
    """Leader's clock runs at half the followers' speed; it is cut off right after a
    quorum-acknowledged heartbeat; the others elect a leader and commit a write."""
    cfg = RaftConfig(read_mode="lease", lease_drift_bound=0.34)  # clocks may differ 2:1
    h = Harness(3, seed=5, config=cfg)
    for nid in h.ids:
        h.cores[nid] = core_factory(nid, h.ids, random.Random(nid.encode()[1]), cfg)
    old = h.elect()
    h.tick(6)
    h.cores[old]._read_only.round_needed = True  # one more acknowledged round, then cut off
    h.run()
    h.isolate(old)
    others = [n for n in h.ids if n != old]
    for step in range(200):
        h.tick(nodes=others)
        if step % 2:
            h.tick(nodes=[old])  # half speed
        new = [n for n in others if h.cores[n].role is Role.LEADER]
        if new and h.cores[new[0]].commit > h.cores[old].commit:
            return h, old, new[0]
    raise AssertionError("no new leader committed")


def test_a_lease_that_ignores_clock_drift_serves_a_stale_read() -> None:
    h, old, new = _lease_scenario(LeaseIgnoresDrift)
    core = h.cores[old]
    assert core.role is Role.LEADER  # check-quorum has not caught up with it yet
    core.read_index("stale?")
    (state,) = core.ready().reads
    assert state.index < h.cores[new].commit  # answered from a stale commit index


def test_the_drift_bounded_lease_refuses_in_the_same_situation() -> None:
    h, old, _ = _lease_scenario(RaftCore)
    core = h.cores[old]
    assert not core.lease_valid()
    core.read_index("stale?")
    assert core.ready().reads == []  # it must confirm with a quorum, which it cannot reach
