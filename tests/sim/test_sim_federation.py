"""The federation workload in the Raft simulator: all six machines replicated under faults."""

from __future__ import annotations

import pytest

from ruflo_consensus.federation.budget import BreakerPolicy
from ruflo_consensus.federation.machine import FederationStateMachine
from ruflo_consensus.sim import RaftSimulation, SimConfig, run_sweep, summarize
from ruflo_consensus.statemachine import StateMachine
from tests.helpers.broken_raft import commit_without_majority


def test_federation_sweep_holds_every_cross_node_property() -> None:
    result = run_sweep(
        SimConfig(workload="federation", duration_s=5), range(24), processes=2, progress=False
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


class _DivergentReplicas(RaftSimulation):
    """Every other replica gets a stricter breaker policy: its state must drift apart."""

    _built = 0

    def _new_machine(self) -> StateMachine:
        self._built += 1
        if self._built % 2 == 0:
            assert self.federation is not None
            return FederationStateMachine(
                approvers=self.federation.approvers(),
                breaker_policy=BreakerPolicy(spend_limit_micros=1, min_failure_samples=1),
            )
        return super()._new_machine()


def test_the_cross_node_check_catches_replicas_that_diverge() -> None:
    # without snapshots: otherwise the snapshot-safety check catches the divergence first
    config = SimConfig(seed=1, workload="federation", duration_s=5, faults=(), snapshot_entries=0)
    summary = summarize(_DivergentReplicas(config).run())
    assert summary.status == "fail"
    assert any("cross-node property" in v for v in summary.violations)
    assert summary.properties["replicas at the same position agree"] is False
    # the honest run of the very same seed passes
    assert summarize(RaftSimulation(config).run()).status == "pass"
    # with snapshots, a diverging replica's snapshot differs from the agreed replay
    snapping = summarize(
        _DivergentReplicas(SimConfig(seed=1, workload="federation", duration_s=5, faults=())).run()
    )
    assert any("snapshot-safety" in v for v in snapping.violations), snapping.violations


def test_a_broken_raft_is_caught_under_the_federation_workload() -> None:
    result = run_sweep(
        SimConfig(workload="federation", duration_s=8),
        range(24),
        processes=2,
        core_factory=commit_without_majority,
        progress=False,
    )
    assert result.failures


@pytest.mark.parametrize("topology", ["ring", "star"])
def test_federation_over_relaying_topologies(topology: str) -> None:
    summary = summarize(
        RaftSimulation(
            SimConfig(seed=3, workload="federation", duration_s=5, topology=topology)
        ).run()
    )
    assert summary.status == "pass", summary.violations
    if topology == "ring":  # on a star, a hub that leads talks to everyone directly
        assert summary.messages_relayed > 0
