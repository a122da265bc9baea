"""The deterministic simulator: replay, every fault, the sweep, and proof that it can fail."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest

from ruflo_consensus.check.history import Op
from ruflo_consensus.core.base import Entry, Proposal
from ruflo_consensus.sim import (
    ALL_FAULTS,
    InvariantViolation,
    RaftInvariants,
    RaftSimulation,
    SimConfig,
    SimConfigError,
    parse_faults,
    run_simulation,
    run_sweep,
)
from ruflo_consensus.sim.kv_workload import KVClient
from ruflo_consensus.sim.raft_sim import NotARaftCore
from ruflo_consensus.sim.workload import KVWorkload, ReplicaState
from ruflo_consensus.statemachine import CommandRejected
from tests.helpers.broken_raft import commit_without_majority, skip_log_matching

REPLAY_SNIPPET = (
    "import sys; from ruflo_consensus.sim import SimConfig, RaftSimulation; "
    "print(RaftSimulation(SimConfig(seed=int(sys.argv[1]), duration_s=4)).run().trace_hash)"
)


def test_same_seed_gives_the_same_trace_hash_in_this_process_and_another() -> None:
    a = RaftSimulation(SimConfig(seed=11, duration_s=4)).run()
    b = RaftSimulation(SimConfig(seed=11, duration_s=4)).run()
    assert a.trace_hash == b.trace_hash
    assert a.history == b.history
    # another interpreter, with a different string-hash seed
    out = subprocess.run(
        [sys.executable, "-c", REPLAY_SNIPPET, "11"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == a.trace_hash


def test_different_seeds_give_different_runs() -> None:
    hashes = {RaftSimulation(SimConfig(seed=s, duration_s=2)).run().trace_hash for s in range(5)}
    assert len(hashes) == 5


@pytest.mark.parametrize("fault", ALL_FAULTS)
def test_each_fault_fires_and_the_invariants_hold(fault: str) -> None:
    summary = run_simulation(SimConfig(seed=3, duration_s=8, faults=(fault,)))
    assert summary.faults.get(fault, 0) > 0, summary.faults
    assert set(summary.faults) == {fault}
    assert summary.status == "pass", summary.violations
    assert summary.linearizable is True
    assert summary.operations["ok"] > 100
    assert all(v > 0 for v in summary.invariants_checked.values())
    if fault == "drop":
        assert summary.messages_dropped > 0
    if fault == "dup":
        assert summary.messages_duplicated > 0
    if fault == "crash":
        assert summary.leader_changes >= 1


def test_no_faults_means_no_drops_and_a_stable_leader() -> None:
    summary = run_simulation(SimConfig(seed=1, duration_s=5, faults=()))
    assert summary.faults == {}
    assert summary.messages_dropped == 0 and summary.messages_duplicated == 0
    assert summary.leader_changes == 1
    assert summary.operations["info"] == 0


def test_a_sweep_of_200_seeds_with_all_faults_passes() -> None:
    result = run_sweep(SimConfig(duration_s=6), range(200), processes=2, progress=False)
    assert len(result.summaries) == 200
    assert [s.seed for s in result.failures] == []
    assert [s.seed for s in result.unknown] == []
    # the faults really happened across the sweep (13 kinds share the nemesis' schedule)
    for fault in ALL_FAULTS:
        assert sum(s.faults.get(fault, 0) for s in result.summaries) > 20, fault
    # more elections than seeds: leaders failed over, not just the first election
    assert sum(s.leader_changes for s in result.summaries) > len(result.summaries)
    # every node ran on the WAL: snapshots were taken and installed, power cuts lost
    # unsynced writes, torn tails were cut off, unreadable disks kept nodes down
    storage: dict[str, int] = {}
    for s in result.summaries:
        for k, v in s.properties["storage"].items():
            storage[k] = storage.get(k, 0) + v
    assert storage["snapshots taken"] > 20 * len(result.summaries)
    assert storage["snapshots restored"] > len(result.summaries)
    for key in ("unsynced bytes lost", "torn tails cut", "opens failed"):
        assert storage.get(key, 0) > 0, key


@pytest.mark.parametrize(
    "factory,seeds",
    [(commit_without_majority, range(0, 24)), (skip_log_matching, range(0, 40))],
    ids=["commit-without-majority", "skip-log-matching"],
)
def test_the_sweep_catches_a_broken_raft_and_the_seed_replays_it(factory, seeds) -> None:
    result = run_sweep(
        SimConfig(duration_s=8), seeds, processes=2, core_factory=factory, progress=False
    )
    assert result.failures, "a broken Raft must not pass the sweep"
    first = result.failures[0]
    assert first.violations
    assert f"--seed {first.seed}" in first.replay
    again = run_simulation(SimConfig(seed=first.seed, duration_s=8), factory)
    assert again.status == "fail"
    assert again.trace_hash == first.trace_hash
    assert again.violations == first.violations
    # the correct core passes the very same seed
    assert run_simulation(SimConfig(seed=first.seed, duration_s=8)).status == "pass"


def _e(term: int, index: int, value: str | None = None) -> Entry:
    return Entry(term, index, None if value is None else Proposal("c", index, value))


def test_invariants_catch_two_leaders_in_one_term() -> None:
    inv = RaftInvariants()
    inv.on_leader("n1", 3, [_e(0, 0)], 10)
    with pytest.raises(InvariantViolation) as exc:
        inv.on_leader("n2", 3, [_e(0, 0)], 20)
    assert exc.value.invariant == "election-safety"
    assert "n1 and n2" in str(exc.value)


def test_invariants_catch_different_applies_at_one_index() -> None:
    inv = RaftInvariants()
    inv.on_apply("n1", _e(1, 1, "a"), 1)
    inv.on_apply("n2", _e(1, 1, "a"), 2)
    with pytest.raises(InvariantViolation) as exc:
        inv.on_apply("n3", _e(2, 1, "b"), 3)
    assert exc.value.invariant == "state-machine-safety"


def test_invariants_catch_a_leader_missing_a_committed_entry() -> None:
    inv = RaftInvariants()
    inv.on_apply("n1", _e(1, 1, "a"), 1)
    with pytest.raises(InvariantViolation) as exc:
        inv.on_leader("n2", 2, [_e(0, 0)], 5)
    assert exc.value.invariant == "leader-completeness"


def _budget_command(bad: float) -> dict[str, Any]:
    # the federation workload's deliberately bad budget, which every replica rejects
    return {"op": "budget.open", "delegation": "bad7", "budget": {"max_hops": bad}, "now": 7}


def _read_back(entry: Entry) -> Entry:
    """The entry as a restarted node holds it: decoded from its encoded bytes (new floats)."""
    p = entry.proposal
    assert p is not None
    command = msgpack.unpackb(msgpack.packb(p.command, use_bin_type=True), raw=False)
    return Entry(entry.term, entry.index, Proposal(p.client, p.seq, command))


def test_invariants_accept_byte_identical_entries_that_carry_nan() -> None:
    # seed 8 of --workload federation failed this way: two copies of one replicated
    # command, each with its own NaN, are not == although their bytes are identical
    ours = Entry(1, 1, Proposal("c", 1, _budget_command(float("nan"))))
    theirs = _read_back(ours)
    assert ours != theirs  # Python equality: NaN != NaN
    inv = RaftInvariants()
    inv.on_apply("n1", ours, 1)
    inv.on_apply("n2", theirs, 2)
    inv.on_leader("n2", 2, [_e(0, 0), theirs], 3)
    inv.check_logs({"n1": [_e(0, 0), ours], "n2": [_e(0, 0), theirs]}, 4)
    for bad in (float("inf"), float("-inf")):  # infinities: equal before, equal still
        entry = Entry(3, 1, Proposal("c", 1, _budget_command(bad)))
        copy = _read_back(entry)
        fresh = RaftInvariants()
        fresh.on_apply("n1", entry, 5)
        fresh.on_apply("n2", copy, 6)
        fresh.check_logs({"n1": [_e(0, 0), entry], "n2": [_e(0, 0), copy]}, 7)


@pytest.mark.parametrize(
    "ours,theirs",
    [(float("nan"), float("inf")), (float("inf"), float("-inf")), (float("nan"), 1.0)],
)
def test_invariants_catch_entries_that_differ_in_a_non_finite_value(ours, theirs) -> None:
    a = Entry(1, 1, Proposal("c", 1, _budget_command(ours)))
    b = Entry(1, 1, Proposal("c", 1, _budget_command(theirs)))
    inv = RaftInvariants()
    inv.on_apply("n1", a, 1)
    with pytest.raises(InvariantViolation) as exc:
        inv.on_apply("n2", b, 2)
    assert exc.value.invariant == "state-machine-safety"
    with pytest.raises(InvariantViolation) as exc:
        inv.on_leader("n2", 2, [_e(0, 0), b], 3)
    assert exc.value.invariant == "leader-completeness"
    with pytest.raises(InvariantViolation) as exc:
        inv.check_logs({"n1": [_e(0, 0), a, _e(1, 2, "y")], "n2": [_e(0, 0), b, _e(1, 2, "y")]}, 4)
    assert exc.value.invariant == "log-matching"


_NON_FINITE = (float("nan"), float("inf"), float("-inf"))


class _KVWithNonFiniteCommands(KVWorkload):
    """The KV mix, and about one command in ten a put of a NaN or an infinity.

    The value is bare or nested as in the federation workload's bad budgets; the KV machine
    rejects it, but Raft replicates it first, through WALs, restarts and snapshots.
    """

    def __init__(self, keys: int) -> None:
        super().__init__(keys)
        self.rejected = 0

    def next_command(self, client: KVClient[Any], rng: random.Random) -> tuple[dict[str, Any], Op]:
        if rng.random() >= 0.1:
            return super().next_command(client, rng)
        bad = _NON_FINITE[rng.randrange(len(_NON_FINITE))]
        value: Any = bad if rng.random() < 0.5 else {"budget": {"max_hops": bad}}
        key = f"k{rng.randrange(self.keys)}"
        return {"op": "put", "key": key, "value": value}, Op(
            client.process, "invoke", "put", key, value
        )

    def outcome(self, op: Op, result: Any, client: KVClient[Any]) -> Op:
        self.rejected += isinstance(result, CommandRejected)
        return super().outcome(op, result, client)

    def check_replicas(self, replicas: Sequence[ReplicaState]) -> tuple[dict[str, Any], list[str]]:
        return {"commands rejected": self.rejected}, []


def _kv_with_non_finite(
    config: SimConfig, rng: random.Random, node_ids: Sequence[str]
) -> _KVWithNonFiniteCommands:
    return _KVWithNonFiniteCommands(config.keys)


def test_a_sweep_whose_commands_carry_nan_and_infinity_passes() -> None:
    # NaN-carrying commands read back from WALs and snapshots must not look different
    result = run_sweep(
        SimConfig(duration_s=6),
        range(40),
        processes=2,
        progress=False,
        workload=_kv_with_non_finite,
    )
    assert [(s.seed, s.violations) for s in result.failures] == []
    assert [s.seed for s in result.unknown] == []
    assert sum(s.properties["commands rejected"] for s in result.summaries) > 40 * 20
    restarts = sum(
        s.faults.get("crash", 0) + s.faults.get("disk-lose", 0) for s in result.summaries
    )
    assert restarts > 5


def test_invariants_catch_logs_that_break_log_matching() -> None:
    inv = RaftInvariants()
    a = [_e(0, 0), _e(1, 1, "x"), _e(2, 2, "y")]
    b = [_e(0, 0), _e(1, 1, "DIFFERENT"), _e(2, 2, "y")]
    inv.check_logs({"n1": a, "n2": list(a)}, 1)
    with pytest.raises(InvariantViolation) as exc:
        inv.check_logs({"n1": a, "n2": b}, 2)
    assert exc.value.invariant == "log-matching"
    assert "index 1" in str(exc.value)


def test_a_violation_stops_the_run_with_a_readable_report() -> None:
    for seed in range(40):
        summary = run_simulation(SimConfig(seed=seed, duration_s=8), commit_without_majority)
        if summary.status == "fail":
            break
    assert summary.status == "fail"
    assert summary.sim_seconds < 8
    assert summary.recent_events
    assert "violated at t=" in summary.violations[0]
    data = summary.to_json()
    assert data["recent_events"] and data["violations"] and data["replay"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nodes": 0},
        {"duration_s": 0},
        {"clients": 0},
        {"workload": "nope"},
        {"faults": ("meteor",)},
        {"seed": -1},
    ],
)
def test_bad_sim_config_is_a_typed_error(kwargs) -> None:
    with pytest.raises(SimConfigError):
        SimConfig(**kwargs)


def test_parse_faults() -> None:
    assert parse_faults("all") == ALL_FAULTS
    assert parse_faults("none") == ()
    assert parse_faults("crash, partition,crash") == ("crash", "partition")
    with pytest.raises(SimConfigError, match="meteor"):
        parse_faults("crash,meteor")


def test_summary_json_is_serialisable_and_complete() -> None:
    summary = run_simulation(SimConfig(seed=2, duration_s=3))
    data = json.loads(json.dumps(summary.to_json()))
    for key in (
        "seed",
        "trace_hash",
        "violations",
        "linearizable",
        "operations",
        "faults",
        "invariants_checked",
        "replay",
        "status",
    ):
        assert key in data
    assert data["status"] == "pass" and "recent_events" not in data


@pytest.mark.parametrize("kind", ["exponential", "uniform", "pareto", "fixed"])
def test_latency_distributions_have_the_configured_floor_and_mean(kind: str) -> None:
    sim = RaftSimulation(SimConfig(seed=1, faults=(), latency=kind))
    draws = [sim.latency() for _ in range(20_000)]
    assert min(draws) >= 500  # latency_min_ms = 0.5 ms
    mean = sum(draws) / len(draws)
    assert 1700 < mean < 2300, mean  # latency_mean_ms = 2 ms
    if kind == "uniform":
        assert max(draws) <= 500 + 2 * 1500 + 1
    if kind == "fixed":
        assert len(set(draws)) == 1
    if kind == "pareto":
        assert max(draws) > 20_000  # a heavy tail: some links are ten times slower


@pytest.mark.parametrize("kind", ["uniform", "pareto"])
def test_raft_is_correct_under_each_latency_distribution(kind: str) -> None:
    summary = run_simulation(SimConfig(seed=4, duration_s=6, latency=kind))
    assert summary.status == "pass", summary.violations
    assert f"--latency {kind}" in summary.replay


class _SomeOtherCore:
    """Not a RaftCore: the Raft simulation has no way to drive it."""


def test_a_core_factory_that_builds_no_raft_core_is_refused_by_name() -> None:
    def build_other(
        node_id, voters, rng, config, hard_state, entries, *, snapshot=None, join=False
    ):
        return _SomeOtherCore()

    with pytest.raises(NotARaftCore, match="_SomeOtherCore"):
        RaftSimulation(SimConfig(seed=0, duration_s=1), build_other)
