"""PBFT in the simulator: sweeps with f Byzantine replicas and network faults, replay, and
proof that the checks fail when PBFT's assumptions are broken (f + 1 liars, no signatures,
fast reads next to writes accepted on f + 1 replies)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from ruflo_consensus.cli import main
from ruflo_consensus.core.base import Message
from ruflo_consensus.core.pbft import (
    PbftFrame,
    Signed,
    seal,
    unsafe_skip_signature_checks_for_tests,
)
from ruflo_consensus.core.pbft.messages import (
    COMMIT,
    READ_REPLY,
    PrePrepare,
    ReadReply,
    ReadRequest,
    Status,
    Vote,
)
from ruflo_consensus.sim import SimConfig, byzantine, pbft_sim, run_simulation, run_sweep
from ruflo_consensus.sim import config as sim_config
from ruflo_consensus.sim.byzantine import Behaviour, _payload
from ruflo_consensus.sim.config import BYZANTINE_BEHAVIOURS, ENGINE_FAULTS
from ruflo_consensus.sim.pbft_sim import PbftSimulation

# Short runs with a compressed fault schedule: faults from 0.1 s to 0.9 s, then a quiet tail
# in which the cluster must heal (view changes, catch-up, state transfer) before the end.
SWEEP = SimConfig(
    backend="pbft",
    nodes=4,
    duration_s=1.5,
    clients=3,
    quiet_tail_s=0.6,
    nemesis_interval_s=(0.1, 0.4),
    fault_duration_s=(0.1, 0.6),
)
PBFT_FAULTS = ENGINE_FAULTS  # what "all" means for PBFT (transfers and disk faults are Raft's)

REPLAY_SNIPPET = (
    "import sys; from ruflo_consensus.sim import SimConfig; "
    "from ruflo_consensus.sim.pbft_sim import PbftSimulation; "
    "print(PbftSimulation(SimConfig(backend='pbft', nodes=4, seed=int(sys.argv[1]), "
    "duration_s=1.5, clients=3, quiet_tail_s=0.6, nemesis_interval_s=(0.1, 0.4), "
    "fault_duration_s=(0.1, 0.6))).run().trace_hash)"
)


def test_same_seed_gives_the_same_trace_hash_in_this_process_and_another() -> None:
    a = PbftSimulation(SWEEP.with_seed(5)).run()
    b = PbftSimulation(SWEEP.with_seed(5)).run()
    assert a.trace_hash == b.trace_hash and a.history == b.history
    # the second run in this process reports the same signature work as the first (the
    # verification cache does not carry over from one run to the next)
    assert a.properties["signatures"] == b.properties["signatures"]
    assert a.properties["signatures"]["verified"] > 0
    out = subprocess.run(
        [sys.executable, "-c", REPLAY_SNIPPET, "5"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "4242", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == a.trace_hash
    other = PbftSimulation(SWEEP.with_seed(6)).run()
    assert other.trace_hash != a.trace_hash


def _check_sweep(nodes: int) -> None:
    # (two clients at n = 7 keep the default run inside its time budget)
    base = replace(SWEEP, nodes=nodes, clients=3 if nodes == 4 else 2)
    result = run_sweep(base, range(200), processes=2, progress=False)
    s = result.summaries
    assert len(s) == 200
    assert [(x.seed, x.violations) for x in result.failures] == []
    assert [x.seed for x in result.unknown] == []
    assert all(x.linearizable is True for x in s)
    f = (nodes - 1) // 3
    # f Byzantine replicas in every run, and every behaviour showed up across the sweep
    behaviours = Counter(b for x in s for b in x.properties["byzantine replicas"].values())
    assert all(len(x.properties["byzantine replicas"]) == f for x in s)
    assert set(behaviours) == set(BYZANTINE_BEHAVIOURS), behaviours
    # the network and node faults really happened
    for fault in PBFT_FAULTS:
        assert sum(x.faults.get(fault, 0) for x in s) > 40, fault
    # the protocol was exercised: view changes, checkpoints, state transfers, catch-up
    total = Counter[str]()
    for x in s:
        total.update({k: v for k, v in x.properties.items() if isinstance(v, int)})
    assert total["views installed"] > 50
    assert total["stable checkpoints (honest)"] > 1000
    assert total["state transfers"] > 10
    assert total["commit certificates used"] > 10
    # Byzantine traffic was caught at the door, by reason
    rejected = Counter[str]()
    for x in s:
        rejected.update(x.rejected_messages)
    for reason in ("bad-signature", "conflicting-vote", "conflicting-pre-prepare", "old-view"):
        assert rejected[reason] > 0, rejected
    assert sum(x.operations["ok"] for x in s) > 200 * 20
    # a seed whose faults lasted into the tail may finish few operations; most finish many
    assert sum(x.operations["ok"] >= 10 for x in s) >= 190
    assert all(x.invariants_checked["liveness"] == 1 for x in s)


def test_a_200_seed_sweep_with_f_byzantine_replicas_and_faults_passes_n4() -> None:
    _check_sweep(4)


def test_a_200_seed_sweep_with_f_byzantine_replicas_and_faults_passes_n7() -> None:
    _check_sweep(7)


def test_a_sweep_with_the_read_only_fast_path_stays_linearizable() -> None:
    base = replace(SWEEP, reads="fast")
    result = run_sweep(base, range(40), processes=2, progress=False)
    assert [(x.seed, x.violations) for x in result.failures] == []
    assert all(x.linearizable is True for x in result.summaries)
    done = [x.properties["fast reads (done / sent through the log)"] for x in result.summaries]
    fast = sum(int(d.split(" / ")[0]) for d in done)
    ordered = sum(int(d.split(" / ")[1]) for d in done)
    assert fast > 500 and ordered > 0  # most reads take one round; contended ones fall back
    assert "--reads fast" in base.with_seed(0).replay_command()


def _first_failure_replays(
    base: SimConfig, seeds: range, violation: str = "agreement violated"
) -> None:
    result = run_sweep(base, seeds, processes=2, progress=False)
    assert result.failures, "breaking PBFT's assumptions must not pass the sweep"
    first = result.failures[0]
    assert any(v.startswith(violation) for v in first.violations), first.violations
    assert f"--seed {first.seed}" in first.replay and "--backend pbft" in first.replay
    again = run_simulation(base.with_seed(first.seed))
    assert again.status == "fail"
    assert again.trace_hash == first.trace_hash
    assert again.violations == first.violations


@pytest.mark.parametrize("nodes", [4, 7])
def test_f_plus_1_colluding_byzantine_replicas_break_agreement_and_the_seed_replays(
    nodes: int,
) -> None:
    f = (nodes - 1) // 3
    base = replace(
        SWEEP, nodes=nodes, byzantine=f + 1, behaviours=("equivocate",), allow_over_f=True
    )
    _first_failure_replays(base, range(6))
    assert "--byzantine" in base.with_seed(0).replay_command()
    # the very same adversary with f replicas is harmless
    tame = run_sweep(replace(base, byzantine=f), range(6), processes=2, progress=False)
    assert tame.failures == []


@pytest.mark.parametrize("nodes", [4, 7])
def test_without_signature_checks_one_forger_breaks_agreement_and_the_seed_replays(
    nodes: int,
) -> None:
    base = replace(SWEEP, nodes=nodes, behaviours=("forge",))
    with unsafe_skip_signature_checks_for_tests():
        _first_failure_replays(base, range(6))
        seed = run_sweep(base, range(6), processes=1, progress=False).failures[0].seed
    # with the checks on, the same seed passes and the forgeries were rejected
    honest = run_simulation(base.with_seed(seed))
    assert honest.status == "pass", honest.violations
    assert honest.rejected_messages.get("bad-signature", 0) > 0


class _StaleReads(Behaviour):
    """The fast path's adversary (tests only): makes two honest replicas lag, then lies.

    As primary it sends each pre-prepare to two honest replicas only and its own commits to
    one, so that one honest replica executes a batch while the other two wait (for a status
    round) at the sequence number before it. It answers fast reads from the state it had at
    the sequence number honest replicas last reported in STATUS (the most reported one), and
    names that number: a reply that matches the lagging replicas' ones exactly.
    """

    name = "stale-reads"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        honest = list(self.adversary.honest)
        self.rng.shuffle(honest)
        self.favourite, self.starved = honest[0], honest[-1]
        self.states: dict[int, dict[str, str]] = {}  # its own KV data after each seq
        self.reads: dict[tuple[str, int], Any] = {}
        self.executed: dict[str, int] = {}  # what each peer last said it executed

    def incoming(self, frame: PbftFrame) -> PbftFrame | None:
        for env in frame.items:
            p = _payload(env)
            if isinstance(p, ReadRequest):
                self.reads[(p.signer, p.t)] = p.op
            elif isinstance(p, Status):
                self.executed[p.signer] = p.executed
        return frame

    def outgoing(self, frames: list[Message]) -> list[Message]:
        core = self.core()
        if core is not None:
            data = core.table.machine.data  # type: ignore[attr-defined]  (a KVStateMachine)
            self.states.setdefault(core.last_executed, dict(data))
            for seq in [s for s in self.states if s < core.last_executed - 64]:
                del self.states[seq]
        out: list[Message] = []
        for frame in frames:
            if not isinstance(frame, PbftFrame):
                out.append(frame)
                continue
            items = [e for e in (self._rewrite(frame.dst, env) for env in frame.items) if e]
            if items:
                out.append(PbftFrame(frame.src, frame.dst, tuple(items)))
        return out

    def _rewrite(self, dst: str, env: Signed) -> Signed | None:
        p = _payload(env)
        mine = p is not None and p.signer == self.node_id
        if mine and isinstance(p, PrePrepare) and p.requests and dst == self.starved:
            self.injected += 1
            return None
        if mine and isinstance(p, Vote) and p.kind == COMMIT and dst != self.favourite:
            self.injected += 1
            return None
        if mine and isinstance(p, ReadReply):
            return self._stale(p) or env
        return env

    def _stale(self, p: ReadReply) -> Signed | None:
        op = self.reads.pop((p.client, p.t), None)
        behind = Counter(s for s in self.executed.values() if s < p.seq and s in self.states)
        if op is None or not behind:
            return None
        seq = max(s for s, k in behind.items() if k == max(behind.values()))
        self.injected += 1
        value = self.states[seq].get(op["key"], "")
        return seal(self.signer, READ_REPLY, p.view, p.client, p.t, seq, ["ok", value])


class _WritesOnFPlus1(PbftSimulation):
    """Clients that break the fast path's first condition: a write (or a read sent through
    the log) is accepted on f + 1 matching replies; fast reads still wait for q."""

    def _reply_arrives(self, frame: PbftFrame) -> None:
        client = self.by_name.get(frame.dst)
        fast = client is not None and client.pending is not None and client.pending.fast
        self.accept_at = self.q if fast else self.f + 1
        super()._reply_arrives(frame)


def test_fast_reads_next_to_writes_accepted_on_f_plus_1_replies_are_not_linearizable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/pbft.md's first condition of the fast path, broken in the clients only: the
    sweep finds a stale fast read after an acknowledged write, and its seed replays it."""
    monkeypatch.setitem(byzantine.BEHAVIOURS, _StaleReads.name, _StaleReads)
    monkeypatch.setitem(sim_config.BYZANTINE_DESCRIPTIONS, _StaleReads.name, "(tests only)")
    # one key: every read is of the key the last write wrote
    base = replace(SWEEP, reads="fast", keys=1, behaviours=(_StaleReads.name,))
    seeds = range(20)
    # the same adversary cannot break clients that keep both conditions
    tame = run_sweep(base, seeds, processes=2, progress=False)
    assert [(x.seed, x.violations) for x in tame.failures] == []
    assert all(x.linearizable is True for x in tame.summaries)
    lies = "messages the adversary forged, altered or dropped"
    assert all(x.properties[lies] > 0 for x in tame.summaries)
    monkeypatch.setattr(pbft_sim, "PbftSimulation", _WritesOnFPlus1)  # what run_simulation runs
    _first_failure_replays(base, seeds, "linearizability: the client history is not linearizable")


PBFT_ARGS = [
    "simulate",
    "--backend",
    "pbft",
    "--nodes",
    "4",
    "--duration",
    "1.5",
    "--clients",
    "3",
    "--quiet-tail",
    "0.6",
    "--nemesis-interval",
    "0.1:0.4",
    "--fault-duration",
    "0.1:0.6",
]


def test_cli_simulate_pbft_reports_and_its_replay_reproduces_the_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*PBFT_ARGS, "--seed", "3", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "pass" and first["linearizable"] is True
    assert "byzantine replicas" in first["properties"]
    argv = [*first["replay"].split()[1:], "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["trace_hash"] == first["trace_hash"]
    assert main([*PBFT_ARGS, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for needle in ("byzantine replicas", "views installed", "signatures", "linearizable"):
        assert needle in out


def test_cli_pbft_sweep_and_byzantine_options(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*PBFT_ARGS, "--seeds", "0:4", "--processes", "2", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["passed"] == 4
    colluders = ["--byzantine", "2", "--behaviours", "equivocate", "--allow-over-f"]
    code = main([*PBFT_ARGS, "--seeds", "0:3", *colluders, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1  # f + 1 colluders: the sweep fails and says how to replay it
    assert "--byzantine 2 --behaviours equivocate" in data["failed"][0]["replay"]
    for bad in (["--byzantine", "9"], ["--behaviours", "teleport"], ["--nemesis-interval", "x"]):
        assert main([*PBFT_ARGS, *bad]) == 2


def test_bench_sim_pbft_reports_committed_requests_next_to_raft(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ruflo_consensus.sim.bench import run_bench_sim

    result = run_bench_sim(replace(SWEEP, faults=()), seeds=1, progress=False)
    assert result["backend"] == "pbft" and len(result["rows"]) == 1
    row = result["rows"][0]
    assert row["pbft_committed"] > 50 and row["raft_committed"] > 50
    assert result["pbft_committed_per_wall_second"] > 0
    assert result["raft_committed_per_wall_second"] > 0
    assert 0 < result["sign_us"] < result["verify_us"] * 10
    assert 0 < result["verify_cache_hit_rate"] < 1
    assert (
        main(
            [
                "bench",
                "sim",
                "--backend",
                "pbft",
                "--nodes",
                "4",
                "--seeds",
                "1",
                "--duration",
                "1",
                "--faults",
                "none",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "PBFT vs Raft" in out and "Ed25519" in out


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["ring", "star", "hierarchical"])
@pytest.mark.parametrize("nodes", [4, 7])
def test_slow_sweeps_over_relaying_topologies_pass(topology: str, nodes: int) -> None:
    base = replace(SWEEP, nodes=nodes, topology=topology)
    result = run_sweep(base, range(100), processes=2, progress=False)
    assert [(x.seed, x.violations) for x in result.failures] == []
    assert sum(x.messages_relayed for x in result.summaries) > 0


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [4, 7])
def test_slow_long_runs_with_the_default_fault_schedule_pass(nodes: int) -> None:
    base = SimConfig(backend="pbft", nodes=nodes, duration_s=12)
    result = run_sweep(base, range(100), processes=2, progress=False)
    assert [(x.seed, x.violations) for x in result.failures] == []
    assert [x.seed for x in result.unknown] == []
    assert sum(x.properties["state transfers"] for x in result.summaries) > 0
