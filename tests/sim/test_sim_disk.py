"""The simulator's durable storage: disk faults, snapshots under faults, and can-fail tests.

Every simulated node runs the real WAL (FileStorage on a SimDisk) with asynchronous
fsyncs; these tests show that each disk fault fires and the invariants hold, that the
runs stay deterministic, and that the new checks catch a broken snapshot and a lease that
ignores clock drift while the correct core passes the very same seeds.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from ruflo_consensus.core.base import Snapshot
from ruflo_consensus.sim import RaftSimulation, SimConfig, run_simulation, run_sweep
from ruflo_consensus.sim.invariants import InvariantViolation, RaftInvariants
from ruflo_consensus.statemachine import KVStateMachine, SessionTable
from tests.helpers.broken_raft import lease_ignores_drift, snapshot_skips_entries

DISK = ("disk-lose", "disk-torn", "disk-read-error")


def _storage(summaries: list[Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for s in summaries:
        for k, v in s.properties["storage"].items():
            total[k] = total.get(k, 0) + v
    return total


@pytest.mark.parametrize("fault", DISK)
def test_each_disk_fault_fires_and_the_cluster_recovers(fault: str) -> None:
    result = run_sweep(
        SimConfig(duration_s=6, faults=(fault, "partition")), range(6), processes=2, progress=False
    )
    assert [s.seed for s in result.failures + result.unknown] == []
    fired = sum(s.faults.get(fault, 0) for s in result.summaries)
    assert fired >= 4, fired
    st = _storage(result.summaries)
    assert st["fsyncs"] > 1000 and st["snapshots taken"] > 50
    if fault == "disk-lose":
        assert st["crashes (lose)"] >= 4
    if fault == "disk-torn":
        # armed nodes tear their next WAL record (one cut off from the rest may write
        # nothing before the fault heals)
        assert st["crashes (torn)"] >= fired // 2
        assert st.get("torn tails cut", 0) >= 1  # recovery cut a torn record off
    if fault == "disk-read-error":
        assert st["opens failed"] >= 4
        # every failed open was retried until the node came back
        assert st["opens"] >= 5 * len(result.summaries) + st["opens failed"]
    for s in result.summaries:
        assert s.operations["ok"] > 100


def test_power_cuts_do_lose_unsynced_writes_and_nothing_acknowledged() -> None:
    # slow disks: plenty of writes wait for their fsync when the power goes
    config = SimConfig(duration_s=6, faults=("disk-lose", "disk-torn"), disk_sync_ms=(1.0, 4.0))
    result = run_sweep(config, range(6), processes=2, progress=False)
    assert [s.seed for s in result.failures + result.unknown] == []
    st = _storage(result.summaries)
    assert st["unsynced bytes lost"] > 0
    # the histories are linearizable: no acknowledged write went missing
    assert all(s.linearizable for s in result.summaries)


def test_a_node_whose_disk_cannot_be_read_stays_down_then_rejoins() -> None:
    seen: list[str] = []

    class Watch(RaftSimulation):
        def trace(self, line: str) -> None:
            super().trace(line)
            if "disk open failed" in line or " restart " in line:
                seen.append(line)

    sim = Watch(SimConfig(seed=2, duration_s=6, faults=("disk-read-error",)))
    result = sim.run()
    assert result.violation is None
    failed = [line for line in seen if "disk open failed" in line]
    assert failed and "read failed" in failed[0]
    node = failed[0].split()[0]
    # it came back later (a restart after the failure), and is up at the end
    after = seen[seen.index(failed[0]) + 1 :]
    assert any(line.split()[0] == node and " restart " in line for line in after)
    assert all(n.up for n in sim.nodes)
    assert sim.raft[sim.by_id[node]].applied > 0


REPLAY = (
    "import sys; from ruflo_consensus.sim import SimConfig, RaftSimulation; "
    "c = SimConfig(seed=5, duration_s=4, faults=('disk-lose', 'disk-torn', 'disk-read-error',"
    " 'leader-slow', 'crash', 'partition')); print(RaftSimulation(c).run().trace_hash)"
)


def test_runs_with_disk_faults_replay_bit_for_bit_in_another_process() -> None:
    faults = ("disk-lose", "disk-torn", "disk-read-error", "leader-slow", "crash", "partition")
    config = SimConfig(seed=5, duration_s=4, faults=faults)
    a = RaftSimulation(config).run()
    b = RaftSimulation(config).run()
    assert a.trace_hash == b.trace_hash and a.history == b.history
    assert a.properties["storage"] == b.properties["storage"]
    out = subprocess.run(
        [sys.executable, "-c", REPLAY],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "999", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == a.trace_hash


# --------------------------------------------------------------------------- can fail


def test_the_sweep_catches_a_snapshot_that_skips_entries_and_the_seed_replays_it() -> None:
    config = SimConfig(duration_s=4)
    result = run_sweep(
        config, range(8), processes=2, core_factory=snapshot_skips_entries, progress=False
    )
    assert result.failures, "a snapshot that skips entries must not pass the sweep"
    first = result.failures[0]
    assert "snapshot-safety" in first.violations[0]
    again = run_simulation(config.with_seed(first.seed), snapshot_skips_entries)
    assert again.status == "fail" and again.trace_hash == first.trace_hash
    assert again.violations == first.violations
    assert run_simulation(config.with_seed(first.seed)).status == "pass"


# Clocks may disagree by ±50% and the lease assumes as much. Ten clients on two keys, who
# retry after 30 ms and give up after 100 ms, keep some of them reading from the old leader
# while others already write through the new one.
LEASE = SimConfig(
    duration_s=4,
    quiet_tail_s=1.0,
    reads="lease",
    faults=("leader-slow",),
    max_drift=0.5,
    clients=10,
    keys=2,
    client_timeout_ms=30,
    client_give_up_ms=100,
)


def test_the_leader_slow_nemesis_catches_a_lease_that_ignores_the_drift_bound() -> None:
    seeds = range(8)
    broken = run_sweep(LEASE, seeds, processes=2, core_factory=lease_ignores_drift, progress=False)
    assert broken.failures, "a lease ignoring clock drift must be caught"
    first = broken.failures[0]
    assert first.linearizable is False  # a stale read
    assert sum(s.faults.get("leader-slow", 0) for s in broken.summaries) >= 8
    correct = run_sweep(LEASE, seeds, processes=2, progress=False)
    assert [s.seed for s in correct.failures + correct.unknown] == []
    again = run_simulation(LEASE.with_seed(first.seed), lease_ignores_drift)
    assert again.status == "fail" and again.trace_hash == first.trace_hash


# --------------------------------------------------------------------------- invariants


def _snap(index: int, term: int, data: bytes) -> Snapshot:
    return Snapshot(index, term, ("n1", "n2", "n3"), (), data)


def test_snapshot_safety_compares_with_the_replayed_state() -> None:
    from ruflo_consensus.core.base import Entry, Proposal

    inv = RaftInvariants(reference=lambda: SessionTable(KVStateMachine()))
    table = SessionTable(KVStateMachine())
    states = [table.snapshot()]
    for i in range(1, 80):
        cmd = {"op": "append", "key": f"k{i % 3}", "value": str(i)}
        e = Entry(1 if i < 40 else 2, i, Proposal("c", i, cmd))
        inv.on_apply("n1", e, i)
        table.apply("c", i, cmd)
        states.append(table.snapshot())
    # right states, out of order (forwards, then behind the reference's position)
    for i in (70, 33, 64, 1, 79, 40, 5):
        inv.on_snapshot("n2", _snap(i, 1 if i < 40 else 2, states[i]), "installed", 100)
    assert inv.checks["snapshot-safety"] == 7
    with pytest.raises(InvariantViolation, match=r"differs from applying entries 1\.\.50"):
        inv.on_snapshot("n3", _snap(50, 2, states[47]), "took", 200)  # skips 48..50
    with pytest.raises(InvariantViolation, match="entry applied there"):
        inv.on_snapshot("n3", _snap(50, 1, states[50]), "took", 200)  # wrong term
    with pytest.raises(InvariantViolation, match="only 79 entries"):
        inv.on_snapshot("n3", _snap(90, 2, states[79]), "took", 200)


def test_log_matching_and_completeness_with_compacted_logs() -> None:
    from ruflo_consensus.core.base import Entry, Proposal

    def e(t: int, i: int, v: str = "x") -> Entry:
        return Entry(t, i, Proposal("c", i, v))

    full = [Entry(0, 0, None), *(e(1, i) for i in range(1, 11))]
    compacted = [Entry(1, 6, None), *(e(1, i) for i in range(7, 11))]
    inv = RaftInvariants()
    inv.check_logs({"a": full, "b": compacted}, 1)
    bad = [Entry(1, 6, None), e(1, 7), e(1, 8, "DIFFERENT"), e(1, 9), e(1, 10)]
    with pytest.raises(InvariantViolation, match="differ at index 8"):
        inv.check_logs({"a": full, "b": bad}, 2)
    for i in range(1, 9):
        inv.on_apply("a", full[i], i)
    inv.on_leader("b", 2, compacted, 3)  # the snapshot covers 1..6, the log holds 7..
    with pytest.raises(InvariantViolation, match="snapshot at index 6 of term 3"):
        inv.on_leader("c", 3, [Entry(3, 6, None), *compacted[1:]], 4)
