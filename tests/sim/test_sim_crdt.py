"""The CRDT backend in the simulator: convergence after heal, on mesh, ring and star."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ruflo_consensus.cli import main
from ruflo_consensus.core.crdt import CrdtConfig
from ruflo_consensus.sim import SimConfig, SimConfigError, run_sweep, summarize
from ruflo_consensus.sim.crdt_sim import CrdtSimulation

NETWORK_AND_NODE_FAULTS = (
    "drop",
    "dup",
    "reorder",
    "partition",
    "oneway",
    "crash",
    "pause",
    "drift",
)


def _config(seed: int = 0, topology: str = "mesh", **kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        seed=seed,
        backend="crdt",
        topology=topology,
        duration_s=3.0,
        quiet_tail_s=1.0,
        clients=3,
        faults=NETWORK_AND_NODE_FAULTS,
    )
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("topology", ["mesh", "ring", "star"])
def test_a_200_seed_sweep_converges_after_every_heal(topology: str) -> None:
    result = run_sweep(_config(topology=topology), range(200), processes=2, progress=False)
    assert [s.seed for s in result.failures] == []
    for s in result.summaries:
        assert s.properties["converged"] is True
        assert s.properties["time to converge after the last heal (ms)"] is not None
        assert s.properties["acknowledged writes present"] is True
        assert s.properties["monotonic reads"] is True
    for fault in NETWORK_AND_NODE_FAULTS:
        assert sum(s.faults.get(fault, 0) for s in result.summaries) > 20, fault
    assert sum(s.properties["writes applied"] for s in result.summaries) > 10_000


def _no_anti_entropy(seed: int) -> CrdtSimulation:
    cfg = _config(seed, topology="ring", faults=("drop",), drop_rate=0.2)
    return CrdtSimulation(cfg, crdt_config=CrdtConfig(anti_entropy=False))


def test_without_anti_entropy_drops_leave_replicas_apart_and_the_seed_replays() -> None:
    failing = None
    for seed in range(10):
        summary = summarize(_no_anti_entropy(seed).run())
        if summary.status == "fail":
            failing = (seed, summary)
            break
    assert failing is not None, "dropped gossip must be able to leave replicas diverged"
    seed, first = failing
    assert any("did not converge" in v for v in first.violations)
    assert first.properties["converged"] is False
    again = summarize(_no_anti_entropy(seed).run())
    assert again.trace_hash == first.trace_hash and again.violations == first.violations
    # with anti-entropy on, the same seed converges
    assert (
        summarize(
            CrdtSimulation(_config(seed, topology="ring", faults=("drop",), drop_rate=0.2)).run()
        ).status
        == "pass"
    )


def test_crdt_runs_replay_in_another_process() -> None:
    here = summarize(CrdtSimulation(_config(5, topology="star")).run()).trace_hash
    code = (
        "from ruflo_consensus.sim import SimConfig, summarize\n"
        "from ruflo_consensus.sim.crdt_sim import CrdtSimulation\n"
        "from tests.sim.test_sim_crdt import _config\n"
        "print(summarize(CrdtSimulation(_config(5, topology='star')).run()).trace_hash)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "99", "PATH": "/usr/bin:/bin"},
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert out.stdout.strip() == here


def test_cli_runs_the_crdt_backend_and_reports_convergence(capsys) -> None:
    code = main(
        ["simulate", "--backend", "crdt", "--topology", "ring", "--duration", "3", "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["status"] == "pass"
    assert "--backend crdt --topology ring" in data["replay"]
    assert data["properties"]["time to converge after the last heal (ms)"] is not None
    assert data["linearizability_checked"] is False


def test_budgets_are_refused_under_crdt() -> None:
    with pytest.raises(SimConfigError, match="hard cap"):
        SimConfig(backend="crdt", workload="federation")
