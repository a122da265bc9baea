"""The federation workload in the Raft simulator: all six machines replicated under faults."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from collections.abc import Sequence

import pytest

from ruflo_consensus.federation.budget import BreakerPolicy
from ruflo_consensus.federation.machine import FederationStateMachine
from ruflo_consensus.federation.workload import FederationSimWorkload, federation_sim_workload
from ruflo_consensus.sim import (
    RaftSimulation,
    SimConfig,
    SimConfigError,
    kv_workload,
    run_simulation,
    run_sweep,
    summarize,
)
from tests.helpers.broken_raft import commit_without_majority


def test_importing_the_simulator_loads_no_federation() -> None:
    probe = (
        "import sys, ruflo_consensus.sim, ruflo_consensus.sim.raft_sim\n"
        "print([m for m in sys.modules if m.startswith('ruflo_consensus.federation')])"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def _federation(config: SimConfig) -> RaftSimulation:
    return RaftSimulation(config, workload=federation_sim_workload)


def test_the_simulator_runs_the_federation_only_when_handed_its_factory() -> None:
    config = SimConfig(seed=3, workload="federation", duration_s=1)
    with pytest.raises(SimConfigError, match="not built into the simulator"):
        RaftSimulation(config)
    with pytest.raises(SimConfigError, match="names 'federation'"):
        RaftSimulation(config, workload=kv_workload)
    with pytest.raises(SimConfigError, match="names 'kv'"):
        RaftSimulation(SimConfig(seed=3, duration_s=1), workload=federation_sim_workload)
    assert isinstance(_federation(config).workload, FederationSimWorkload)


def test_the_federation_factory_pickles_so_sweep_workers_get_it() -> None:
    assert pickle.loads(pickle.dumps(federation_sim_workload)) is federation_sim_workload
    # two seeds through a pool of two workers: the federation ran in each of them
    result = run_sweep(
        SimConfig(workload="federation", duration_s=1, faults=()),
        range(2),
        processes=2,
        progress=False,
        workload=federation_sim_workload,
    )
    assert all(s.properties["commands accepted"] > 0 for s in result.summaries)
    single = run_simulation(
        SimConfig(seed=1, workload="federation", duration_s=1, faults=()),
        workload=federation_sim_workload,
    )
    assert single.trace_hash == result.summaries[1].trace_hash


def test_seed_8_whose_entries_carry_a_nan_is_no_safety_violation() -> None:
    # It failed with "state-machine-safety violated": two copies of a bad budget.open
    # with max_hops NaN, printed identically, compared with == (NaN != NaN).
    summary = run_simulation(
        SimConfig(seed=8, workload="federation"), workload=federation_sim_workload
    )
    assert summary.status == "pass", summary.violations
    assert summary.properties["commands rejected by code"]["INVALID_BUDGET"] > 0


def test_federation_sweep_holds_every_cross_node_property() -> None:
    result = run_sweep(
        SimConfig(workload="federation", duration_s=5),
        range(24),
        processes=2,
        progress=False,
        workload=federation_sim_workload,
    )
    assert result.failures == [] and result.unknown == []
    for s in result.summaries:
        props = s.properties
        for name in (
            "replicas at the same position agree",
            "no spend above a cap",
            "identical trust levels",
            "one outcome per proposal",
            "audit chain verifies",
        ):
            assert props[name] is True, (s.seed, name)
        assert props["replicas compared"] == 5
        assert props["commands accepted"] > 50
    # the workload really exercised the rules: spends refused at the cap, ineligible votes
    codes: dict[str, int] = {}
    for s in result.summaries:
        for code, n in s.properties["commands rejected by code"].items():
            codes[code] = codes.get(code, 0) + n
    for code in ("BUDGET_EXCEEDED", "BAD_SIGNATURE", "NOT_ELIGIBLE", "INVALID_BUDGET"):
        assert codes.get(code, 0) > 0, code
    assert sum(s.properties["proposals decided"] for s in result.summaries) > 50


class _DivergentWorkload(FederationSimWorkload):
    """Every other replica gets a stricter breaker policy: its state must drift apart."""

    built = 0

    def new_machine(self) -> FederationStateMachine:
        self.built += 1
        if self.built % 2 == 0:
            return FederationStateMachine(
                approvers=self.commands.approvers(),
                breaker_policy=BreakerPolicy(spend_limit_micros=1, min_failure_samples=1),
            )
        return super().new_machine()


def _divergent(
    config: SimConfig, rng: random.Random, node_ids: Sequence[str]
) -> _DivergentWorkload:
    return _DivergentWorkload(rng.getrandbits(32), peers=config.keys, node_ids=node_ids)


def test_the_cross_node_check_catches_replicas_that_diverge() -> None:
    # without snapshots: otherwise the snapshot-safety check catches the divergence first
    config = SimConfig(seed=1, workload="federation", duration_s=5, faults=(), snapshot_entries=0)
    summary = summarize(RaftSimulation(config, workload=_divergent).run())
    assert summary.status == "fail"
    assert any("cross-node property" in v for v in summary.violations)
    assert summary.properties["replicas at the same position agree"] is False
    # the honest run of the very same seed passes
    assert summarize(_federation(config).run()).status == "pass"
    # with snapshots, a diverging replica's snapshot differs from the agreed replay
    snapping = summarize(
        RaftSimulation(
            SimConfig(seed=1, workload="federation", duration_s=5, faults=()), workload=_divergent
        ).run()
    )
    assert any("snapshot-safety" in v for v in snapping.violations), snapping.violations


def test_a_broken_raft_is_caught_under_the_federation_workload() -> None:
    result = run_sweep(
        SimConfig(workload="federation", duration_s=8),
        range(24),
        processes=2,
        core_factory=commit_without_majority,
        progress=False,
        workload=federation_sim_workload,
    )
    assert result.failures


@pytest.mark.parametrize("topology", ["ring", "star"])
def test_federation_over_relaying_topologies(topology: str) -> None:
    config = SimConfig(seed=3, workload="federation", duration_s=5, topology=topology)
    summary = summarize(_federation(config).run())
    assert summary.status == "pass", summary.violations
    if topology == "ring":  # on a star, a hub that leads talks to everyone directly
        assert summary.messages_relayed > 0
