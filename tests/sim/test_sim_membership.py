"""The simulator's membership nemesis: changes under faults, its checks, and a broken core."""

from __future__ import annotations

import pytest

from ruflo_consensus.core.base import ConfChange, ConfChangeKind, Entry
from ruflo_consensus.core.raft import RaftCore
from ruflo_consensus.core.raft.membership import Configuration
from ruflo_consensus.sim import (
    InvariantViolation,
    RaftSimulation,
    SimConfig,
    run_simulation,
    run_sweep,
)
from ruflo_consensus.sim.membership import MembershipInvariants
from tests.helpers.broken_raft import two_conf_changes_at_once

MIXED = ("membership", "crash", "partition", "transfer", "disk-lose")


class _Watched(RaftSimulation):
    """Records, at every periodic check, the voters of the newest leader."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.voter_counts: list[int] = []

    def on_check(self) -> None:
        super().on_check()
        found = self.membership._leader()
        if found is not None:
            self.voter_counts.append(len(found[1].voters))


def test_membership_changes_under_faults_keep_raft_safe_and_histories_linearizable() -> None:
    result = run_sweep(
        SimConfig(duration_s=6, faults=MIXED), range(16), processes=2, progress=False
    )
    assert [s.seed for s in result.failures] == []
    assert [s.seed for s in result.unknown] == []
    stats: dict[str, int] = {}
    for s in result.summaries:
        for k, v in s.properties.get("membership", {}).items():
            stats[k] = stats.get(k, 0) + v
    # voters were removed and came back the careful way
    assert stats.get("remove-voter", 0) >= 5, stats
    assert stats.get("add-learner", 0) >= 3 and stats.get("promote-learner", 0) >= 3, stats
    assert stats.get("nodes re-added as voters", 0) >= 3, stats
    assert any(k.startswith("refused") for k in stats), stats  # and some were refused
    assert all(s.invariants_checked["membership-safety"] > 0 for s in result.summaries)


def test_the_nemesis_keeps_a_majority_of_the_original_nodes_voting() -> None:
    sim = _Watched(SimConfig(seed=5, duration_s=8, faults=("membership",)))
    result = sim.run()
    assert result.violation is None
    assert result.faults["membership"] >= 3
    assert min(sim.voter_counts) >= 3  # at most two of five out at once
    assert min(sim.voter_counts) < 5 and max(sim.voter_counts) == 5


def test_a_leader_removes_itself_under_the_nemesis_and_the_cluster_carries_on() -> None:
    for seed in range(12):
        summary = run_simulation(SimConfig(seed=seed, duration_s=6, faults=("membership",)))
        assert summary.status == "pass", summary.violations
        if summary.properties["membership"].get("leaders that removed themselves"):
            break
    else:
        raise AssertionError("no leader removed itself in 12 seeds")
    assert summary.leader_changes >= 2  # it stepped down and another took over
    assert summary.linearizable is True and summary.operations["ok"] > 100


def test_the_sweep_catches_two_configuration_changes_in_flight_and_the_seed_replays() -> None:
    config = SimConfig(duration_s=6, faults=("membership",))
    result = run_sweep(
        config, range(12), processes=2, core_factory=two_conf_changes_at_once, progress=False
    )
    assert result.failures, "a core that allows two uncommitted changes must not pass"
    first = result.failures[0]
    assert "membership-safety" in first.violations[0]
    assert "two configuration changes in flight" in first.violations[0]
    assert f"--seed {first.seed}" in first.replay
    again = run_simulation(config.with_seed(first.seed), two_conf_changes_at_once)
    assert again.status == "fail"
    assert again.trace_hash == first.trace_hash
    assert again.violations == first.violations
    # the correct core passes the very same seed
    assert run_simulation(config.with_seed(first.seed)).status == "pass"


# --------------------------------------------------------------------------- the checks


def _conf_entry(term: int, index: int, kind: str, node: str, voters, learners=()) -> Entry:
    return Entry(term, index, None, ConfChange(ConfChangeKind(kind), node, voters, learners))


def test_the_log_check_refuses_a_jump_of_more_than_one_server() -> None:
    inv = MembershipInvariants()
    base = Configuration(("n1", "n2", "n3"))
    good = [
        Entry(0, 0, None),
        _conf_entry(1, 1, "remove-voter", "n3", ("n1", "n2")),
        _conf_entry(1, 2, "add-learner", "n3", ("n1", "n2"), ("n3",)),
    ]
    inv.check_logs({"n1": (good, base)}, 1)
    jump = [Entry(0, 0, None), _conf_entry(1, 1, "remove-voter", "n3", ("n1",))]
    with pytest.raises(InvariantViolation) as exc:
        inv.check_logs({"n1": (jump, base)}, 2)
    assert exc.value.invariant == "membership-safety"
    assert "not one single-server step" in str(exc.value)
    assert inv.checks["membership-safety"] == 2


def _leader_core(log: list[Entry], commit: int) -> RaftCore:
    core = RaftCore("n1", ["n1", "n2", "n3"], __import__("random").Random(0), entries=log[1:])
    core._term = 2
    core._role = core.role.LEADER
    core.commit = commit
    return core


def test_the_leader_check_refuses_a_second_change_and_one_before_a_commit_of_the_term() -> None:
    from ruflo_consensus.core.base import Persist, Ready
    from ruflo_consensus.sim.engine import EngineNode

    node = EngineNode("n1", 0)
    first = _conf_entry(2, 3, "remove-voter", "n3", ("n1", "n2"))
    second = _conf_entry(2, 4, "add-learner", "n3", ("n1", "n2"), ("n3",))
    log = [Entry(0, 0, None), Entry(1, 1, None), Entry(2, 2, None), first, second]
    # committed through the no-op of term 2, the first change may be appended ...
    inv = MembershipInvariants()
    inv.on_ready(node, _leader_core(log[:4], 2), Ready(Persist(entries=[first])), 1)
    # ... but not a second one while the first is uncommitted
    with pytest.raises(InvariantViolation, match="two configuration changes in flight"):
        inv.on_ready(node, _leader_core(log, 2), Ready(Persist(entries=[second])), 2)
    # and not before an entry of the leader's term is committed
    inv = MembershipInvariants()
    with pytest.raises(InvariantViolation, match="before any entry of that term"):
        inv.on_ready(node, _leader_core(log[:4], 1), Ready(Persist(entries=[first])), 3)
