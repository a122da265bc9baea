"""Unit tests of the sans-IO Raft core, driven by hand through a synchronous router."""

from __future__ import annotations

import random

import pytest

from ruflo_consensus.core.base import (
    Entry,
    HardState,
    NotLeader,
    Proposal,
    ProtocolError,
    Role,
)
from ruflo_consensus.core.raft import (
    AppendEntries,
    AppendResponse,
    RaftConfig,
    RaftCore,
    RequestVote,
)
from tests.helpers.raft_harness import Harness


def test_defaults_match_the_swarm_timings() -> None:
    cfg = RaftConfig()
    assert (cfg.election_timeout_min_ms, cfg.election_timeout_max_ms) == (150, 300)
    assert cfg.heartbeat_ms == 50
    assert cfg.election_ticks == 15 and cfg.election_ticks_max == 30 and cfg.heartbeat_ticks == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tick_ms": 0},
        {"heartbeat_ms": 200},
        {"election_timeout_max_ms": 100},
        {"max_inflight": 0},
        {"max_batch_entries": 0},
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RaftConfig(**kwargs)


def test_randomized_timeouts_stay_in_range() -> None:
    core = RaftCore("n1", ["n1", "n2", "n3"], random.Random(1))
    seen = set()
    for _ in range(500):
        t = core._random_timeout()
        assert 15 <= t < 30
        seen.add(t)
    assert len(seen) > 10


def test_exactly_one_leader_is_elected_and_commits_a_noop() -> None:
    h = Harness(5, seed=3)
    leader = h.elect()
    assert h.leaders() == [leader]
    h.tick(10)
    term = h.cores[leader].term
    for nid in h.ids:
        assert h.cores[nid].term == term
        assert h.cores[nid].leader == leader
        # the leader's no-op of its term is committed and applied everywhere
        assert [e.proposal for e in h.applied[nid]] == [None]


def test_proposals_replicate_commit_and_apply_in_order_exactly_once() -> None:
    h = Harness(3, seed=1)
    leader = h.elect()
    for i in range(20):
        h.cores[leader].propose(Proposal("c", i + 1, {"op": "put", "key": "k", "value": str(i)}))
    h.run()
    h.tick(6)
    for nid in h.ids:
        seqs = [e.proposal.seq for e in h.applied[nid] if e.proposal is not None]
        assert seqs == list(range(1, 21))
        indexes = [e.index for e in h.applied[nid]]
        assert indexes == sorted(set(indexes))


def test_follower_refuses_proposals_with_a_leader_hint() -> None:
    h = Harness(3, seed=2)
    leader = h.elect()
    follower = next(n for n in h.ids if n != leader)
    with pytest.raises(NotLeader) as exc:
        h.cores[follower].propose(Proposal("c", 1, None))
    assert exc.value.leader == leader


def test_proposals_between_ready_calls_are_batched_into_one_append() -> None:
    h = Harness(3, seed=4)
    leader = h.elect()
    h.tick(6)
    core = h.cores[leader]
    for i in range(10):
        core.propose(Proposal("c", i + 1, i))
    rd = core.ready()
    appends = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert len(appends) == 2  # one per follower
    assert all(len(m.entries) == 10 for m in appends)
    assert len(rd.persist.entries) == 10  # persisted before they are sent


def test_pipelining_is_bounded_by_max_inflight() -> None:
    h = Harness(3, seed=5, config=RaftConfig(max_inflight=3))
    leader = h.elect()
    h.tick(6)
    core = h.cores[leader]
    follower = next(n for n in h.ids if n != leader)
    sent = 0
    for i in range(10):
        core.propose(Proposal("c", i + 1, i))
        rd = core.ready()  # no acknowledgements are delivered
        sent += sum(1 for m in rd.messages if isinstance(m, AppendEntries) and m.dst == follower)
    assert sent == 3  # three appends in flight, then the follower is paused
    inflight = core.progress[follower].inflight
    assert len(inflight) == 3
    assert core.progress[follower].next == inflight[-1][0] + 1


def test_pre_vote_keeps_an_isolated_node_from_inflating_terms() -> None:
    h = Harness(3, seed=6)
    leader = h.elect()
    h.tick(5)
    lonely = next(n for n in h.ids if n != leader)
    term = h.cores[leader].term
    h.isolate(lonely)
    h.tick(200)
    assert h.cores[lonely].term == term  # pre-votes never won, so no term bump
    h.heal()
    h.tick(20)
    assert h.leaders() == [leader] and h.cores[leader].term == term


def test_without_pre_vote_an_isolated_node_inflates_its_term() -> None:
    h = Harness(3, seed=6, config=RaftConfig(pre_vote=False))
    leader = h.elect()
    h.tick(5)
    lonely = next(n for n in h.ids if n != leader)
    term = h.cores[leader].term
    h.isolate(lonely)
    h.tick(200)
    assert h.cores[lonely].term > term + 3


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    h = Harness(3, seed=7)
    leader = h.elect()
    h.isolate(leader)
    h.tick(40, nodes=[leader])
    assert h.cores[leader].role is Role.FOLLOWER


def test_leader_stickiness_ignores_votes_while_a_leader_is_live() -> None:
    h = Harness(3, seed=8)
    leader = h.elect()
    h.tick(3)
    follower = next(n for n in h.ids if n != leader)
    core = h.cores[follower]
    term = core.term
    core.step(RequestVote("n3" if follower != "n3" else "n2", follower, term + 5, 100, term, False))
    assert core.term == term and core.leader == leader


def test_follower_rejects_append_that_fails_log_matching_and_hints_back() -> None:
    core = RaftCore(
        "n2",
        ["n1", "n2", "n3"],
        random.Random(0),
        hard_state=HardState(3, None, 0),
        entries=[Entry(1, 1, None), Entry(2, 2, None), Entry(2, 3, None)],
    )
    core.step(AppendEntries("n1", "n2", 3, 3, 3, (Entry(3, 4, None),), 0))
    rd = core.ready()
    (resp,) = rd.messages
    assert isinstance(resp, AppendResponse) and not resp.success
    assert (resp.hint_index, resp.hint_term) == (2, 2)  # first index of conflicting term 2
    assert core.last_index == 3  # nothing appended


def test_conflicting_suffix_is_truncated_and_replaced() -> None:
    core = RaftCore(
        "n2",
        ["n1", "n2", "n3"],
        random.Random(0),
        hard_state=HardState(3, None, 1),
        entries=[Entry(1, 1, None), Entry(2, 2, None), Entry(2, 3, None)],
    )
    new = (Entry(3, 2, Proposal("c", 1, "x")), Entry(3, 3, Proposal("c", 2, "y")))
    core.step(AppendEntries("n1", "n2", 3, 1, 1, new, 3))
    assert [e.term for e in core.log[1:]] == [1, 3, 3]
    rd = core.ready()
    assert rd.persist.truncate_from == 2 and [e.term for e in rd.persist.entries] == [3, 3]
    assert [c.entry.index for c in rd.committed] == [1, 2, 3]


def test_diverged_follower_is_repaired_by_conflict_backoff() -> None:
    h = Harness(3, seed=9)
    leader = h.elect()
    h.tick(6)
    lagging = next(n for n in h.ids if n != leader)
    h.isolate(lagging)
    for i in range(30):
        h.cores[leader].propose(Proposal("c", i + 1, i))
    h.run()
    h.tick(6)
    h.heal()
    h.tick(30)
    assert h.cores[lagging].log == h.cores[leader].log
    assert h.cores[lagging].commit == h.cores[leader].commit


def test_figure8_old_term_entries_commit_only_with_a_current_term_entry() -> None:
    # n1 leads term 4; index 2 (term 2) is on a majority but must not commit by counting.
    log = [Entry(1, 1, None), Entry(2, 2, Proposal("c", 1, "old"))]
    core = RaftCore(
        "n1", ["n1", "n2", "n3"], random.Random(0), hard_state=HardState(3, "n1", 1), entries=log
    )
    core._term = 3
    core._campaign(pre_vote=False)  # term 4
    core.ready()
    from ruflo_consensus.core.raft import VoteResponse

    core.step(VoteResponse("n2", "n1", 4, True, False))
    assert core.role is Role.LEADER
    core.ready()
    noop_index = core.last_index
    assert core.log[noop_index].term == 4
    # n2 acknowledges index 2 only (the old entry): still no commit beyond 1
    core.step(AppendResponse("n2", "n1", 4, True, 2, 0, 0))
    assert core.commit == 1
    core.step(AppendResponse("n2", "n1", 4, True, noop_index, 0, 0))
    assert core.commit == noop_index


def test_restart_keeps_term_vote_and_log() -> None:
    h = Harness(3, seed=10)
    leader = h.elect()
    for i in range(5):
        h.cores[leader].propose(Proposal("c", i + 1, i))
    h.run()
    h.tick(6)
    victim = next(n for n in h.ids if n != leader)
    before = (h.cores[victim].term, h.cores[victim].vote, h.cores[victim].log)
    h.restart(victim)
    after = h.cores[victim]
    assert (after.term, after.vote, after.log) == before
    # the restarted node re-applies everything committed, in order
    h.tick(6)
    assert [e.index for e in h.applied[victim]] == list(range(1, after.commit + 1))


@pytest.mark.parametrize(
    "message,reason",
    [
        (AppendResponse("n9", "n1", 1, True, 0, 0, 0), "unknown-sender"),
        (AppendEntries("n1", "n1", 1, 0, 0, (), 0), "unknown-sender"),
        (AppendEntries("n2", "n3", 1, 0, 0, (), 0), "wrong-destination"),
        (AppendEntries("n2", "n1", -1, 0, 0, (), 0), "bad-field"),
        (AppendEntries("n2", "n1", 1, 0, 0, (Entry(1, 5, None),), 0), "bad-field"),
        (AppendEntries("n2", "n1", 1, 0, 0, (Entry(9, 1, None),), 0), "bad-field"),
    ],
)
def test_invalid_messages_raise_typed_errors_and_change_nothing(message, reason) -> None:
    core = RaftCore("n1", ["n1", "n2", "n3"], random.Random(0))
    before = (core.term, core.vote, list(core.log), core.commit, core.role)
    with pytest.raises(ProtocolError) as exc:
        core.step(message)
    assert exc.value.reason == reason
    assert core.rejected[reason] == 1
    assert (core.term, core.vote, list(core.log), core.commit, core.role) == before
    assert not core.has_ready()


def test_stale_leader_learns_the_new_term_and_steps_down() -> None:
    h = Harness(3, seed=11)
    old = h.elect()
    h.isolate(old)
    others = [n for n in h.ids if n != old]
    for _ in range(200):
        h.tick(nodes=others)
        if any(h.cores[n].role is Role.LEADER for n in others):
            break
    new = next(n for n in others if h.cores[n].role is Role.LEADER)
    assert h.cores[new].term > h.cores[old].term
    h.heal()
    h.tick(10)
    assert h.leaders() == [new]
    assert h.cores[old].leader == new


def test_single_node_cluster_commits_alone() -> None:
    core = RaftCore("solo", ["solo"], random.Random(0))
    for _ in range(40):
        core.tick()
        if core.role is Role.LEADER:
            break
    assert core.role is Role.LEADER
    core.propose(Proposal("c", 1, "x"))
    rd = core.ready()
    assert [c.entry.proposal for c in rd.committed][-1] == Proposal("c", 1, "x")


def test_the_core_factory_builds_its_class_and_survives_pickling() -> None:
    import pickle

    from ruflo_consensus.core.raft import RaftCoreFactory

    class Marked(RaftCore):
        pass

    plain = pickle.loads(pickle.dumps(RaftCoreFactory()))
    core = plain("n1", ["n1", "n2", "n3"], random.Random(1), RaftConfig(), None, [])
    assert type(core) is RaftCore and core.voters == ("n1", "n2", "n3")
    spare = RaftCoreFactory(Marked)(
        "n4", ["n1", "n2", "n3"], random.Random(1), RaftConfig(), None, [], join=True
    )
    assert type(spare) is Marked and not spare.is_voter
    assert repr(RaftCoreFactory(Marked)) == "RaftCoreFactory(Marked)"
