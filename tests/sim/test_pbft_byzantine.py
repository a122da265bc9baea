"""Each Byzantine behaviour fires in the simulator, and the honest replicas withstand it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ruflo_consensus.core.pbft import decode_body
from ruflo_consensus.sim import SimConfig, SimConfigError, run_simulation
from ruflo_consensus.sim.byzantine import BEHAVIOURS
from ruflo_consensus.sim.config import BYZANTINE_BEHAVIOURS
from ruflo_consensus.sim.pbft_sim import PbftSimulation
from ruflo_consensus.sim.report import summarize
from tests.sim.test_pbft_sim import SWEEP


def _run(behaviour: str, primary: bool, nodes: int = 4) -> tuple[PbftSimulation, dict[str, Any]]:
    """A passing run with one ``behaviour`` replica (the view-0 primary when asked)."""
    base = replace(SWEEP, nodes=nodes, behaviours=(behaviour,))
    for seed in range(60):
        sim = PbftSimulation(base.with_seed(seed))
        if ("n1" in sim.byzantine) == primary:
            break
    result = sim.run()
    summary = summarize(result)
    assert summary.status == "pass", summary.violations
    assert summary.linearizable is True
    props = summary.properties
    assert props["byzantine replicas"] == {b: behaviour for b in sim.byzantine}
    return sim, summary.to_json()


def test_every_named_behaviour_exists() -> None:
    assert set(BEHAVIOURS) == set(BYZANTINE_BEHAVIOURS)


def test_a_silent_primary_is_replaced() -> None:
    _sim, s = _run("silent", primary=True)
    assert s["properties"]["views installed"] >= 1
    assert s["properties"]["messages the adversary forged, altered or dropped"] > 0
    assert s["operations"]["ok"] > 20


def test_an_equivocating_primary_cannot_split_the_honest_replicas() -> None:
    _sim, s = _run("equivocate", primary=True)
    assert s["rejected_messages"].get("conflicting-pre-prepare", 0) > 0 or (
        s["properties"]["commit certificates used"] > 0
    )
    assert s["properties"]["messages the adversary forged, altered or dropped"] > 0
    assert s["operations"]["ok"] > 20


def test_forgeries_are_rejected_as_bad_signatures() -> None:
    sim, s = _run("forge", primary=False)
    assert s["rejected_messages"]["bad-signature"] > 20
    assert s["properties"]["messages the adversary forged, altered or dropped"] > 20
    forged = [b for _, (b, _, _) in sim.invariants.executed.items() for c, t, _ in b if t > 10**6]
    assert forged == []  # no forged request was ever executed


def test_replayed_old_messages_change_nothing() -> None:
    _sim, s = _run("replay", primary=False)
    stale = sum(s["rejected_messages"].get(r, 0) for r in ("below-watermark", "old-view"))
    assert stale > 0
    assert s["properties"]["messages the adversary forged, altered or dropped"] > 0


def test_conflicting_votes_are_rejected() -> None:
    _sim, s = _run("conflict", primary=False)
    assert s["rejected_messages"]["conflicting-vote"] > 10
    assert s["operations"]["ok"] > 20


def test_lying_checkpoints_never_make_it_into_a_stable_proof() -> None:
    sim, s = _run("lie-checkpoint", primary=False)
    liar = next(iter(sim.byzantine))
    assert s["properties"]["stable checkpoints (honest)"] > 10
    for rep in sim.reps:
        if rep.core is None or rep.behaviour is not None:
            continue
        signers = {decode_body(e.body).signer for e in rep.core.stable_proof}
        assert liar not in signers


def test_a_censoring_primary_is_replaced_and_its_victim_is_served() -> None:
    sim, s = _run("censor", primary=True)
    assert s["properties"]["views installed"] >= 1
    victim_ok = [op for op in sim.history if op.process % len(sim.clients) == 0 and op.type == "ok"]
    assert len(victim_ok) > 5
    assert s["properties"]["messages the adversary forged, altered or dropped"] > 0


def test_wrong_replies_from_f_replicas_are_never_accepted() -> None:
    sim, s = _run("wrong-reply", primary=False)
    assert s["properties"]["messages the adversary forged, altered or dropped"] > 20
    assert not any(op.value == "lie" for op in sim.history)


def test_f_plus_1_liars_get_a_wrong_answer_accepted_and_the_checker_sees_it() -> None:
    base = replace(SWEEP, byzantine=2, behaviours=("wrong-reply",), allow_over_f=True)
    summary = run_simulation(base.with_seed(1))
    assert summary.status == "fail"
    assert summary.linearizable is False  # clients accepted 'lie' that nobody wrote


def test_byzantine_settings_are_checked_and_replayed() -> None:
    with pytest.raises(SimConfigError):
        SimConfig(backend="pbft", nodes=4, byzantine=5)
    with pytest.raises(SimConfigError):
        SimConfig(backend="pbft", behaviours=("teleport",))
    cfg = replace(SWEEP, byzantine=2, behaviours=("silent", "forge"), allow_over_f=True)
    cmd = cfg.replay_command()
    assert "--byzantine 2" in cmd and "--behaviours silent,forge" in cmd
    assert "--quiet-tail 0.6" in cmd and "--nemesis-interval 0.1:0.4" in cmd
