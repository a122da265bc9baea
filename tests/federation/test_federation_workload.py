"""The deterministic federation workload and the cross-replica checker."""

from __future__ import annotations

import collections
import itertools

import msgpack

from ruflo_consensus.federation import (
    FederationStateMachine,
    FederationWorkload,
    check_cross_replica,
    check_replica,
    replay,
)
from ruflo_consensus.federation.audit import record_hash
from ruflo_consensus.federation.trust import TrustLevel
from ruflo_consensus.statemachine import CommandRejected


def test_same_seed_same_commands_and_increasing_time() -> None:
    a = FederationWorkload(5, peers=4).take(600)
    b = FederationWorkload(5, peers=4).take(600)
    # (msgpack, not canonical_bytes: some invalid commands carry NaN on purpose)
    assert msgpack.packb(a) == msgpack.packb(b)
    assert msgpack.packb(a) != msgpack.packb(FederationWorkload(6, peers=4).take(600))
    times = [c["now"] for c in a]
    assert all(x < y for x, y in itertools.pairwise(times))
    assert FederationWorkload(1, peers=["x", "y"]).take(1)[0]["manifest"]["node_id"] == "x"


def test_the_mix_covers_all_six_machines_with_valid_and_invalid_commands() -> None:
    w = FederationWorkload(9, peers=5)
    commands = w.take(2500)
    fed, results = replay(commands, w.new_machine())
    namespaces = collections.Counter(c["op"].split(".")[0] for c in commands)
    assert {"registry", "trust", "budget", "qtable", "audit", "proposals", "federation"} <= set(
        namespaces
    )
    outcome = collections.Counter(
        (c["op"], r.code if isinstance(r, CommandRejected) else "ok")
        for c, r in zip(commands, results, strict=True)
    )
    for expected in [
        ("registry.join", "ok"),
        ("registry.join", "BAD_SIGNATURE"),
        ("registry.handshake", "ok"),
        ("federation.send", "ok"),
        ("budget.open", "INVALID_BUDGET"),
        ("proposals.vote", "ok"),
        ("proposals.vote", "BAD_SIGNATURE"),
        ("qtable.update", "ok"),
        ("audit.append", "ok"),
        ("trust.record", "ok"),
    ]:
        assert outcome[expected] > 0, expected
    statuses = collections.Counter(p.status.value for p in fed.proposals.proposals.values())
    assert statuses["approved"] > 0 and statuses["expired"] > 0
    assert check_replica(fed) == []


def test_checker_accepts_lagging_replicas_but_not_divergent_ones() -> None:
    w = FederationWorkload(21, peers=4)
    commands = w.take(800)
    full, _ = replay(commands, FederationWorkload(21, peers=4).new_machine())
    lagging, _ = replay(commands[:500], FederationWorkload(21, peers=4).new_machine())
    snaps = [full.snapshot(), full.snapshot(), lagging.snapshot()]
    assert check_cross_replica(snaps, require_equal=False) == []
    assert any("different states" in v for v in check_cross_replica(snaps))


def _tampered(fed: FederationStateMachine) -> FederationStateMachine:
    copy = FederationStateMachine()
    copy.restore(fed.snapshot())
    return copy


def test_checker_reports_each_kind_of_violation() -> None:
    w = FederationWorkload(4, peers=4)
    fed, _ = replay(w.take(900), FederationWorkload(4, peers=4).new_machine())
    base = fed.snapshot()
    assert check_cross_replica([base, base]) == []

    # Same number of accepted commands, different trust level.
    bad = _tampered(fed)
    peer = bad.registry.peer_ids()[0]
    rec = bad.trust.peers[peer]
    rec.level = TrustLevel.PRIVILEGED if rec.level != TrustLevel.PRIVILEGED else TrustLevel.VERIFIED
    report = check_cross_replica([base, bad.snapshot()])
    assert any(f"peer {peer} is" in v for v in report)
    assert any("differ in trust" in v for v in report)

    # Spend above a cap.
    bad = _tampered(fed)
    bad.budget.apply({"op": "open", "delegation": "cap", "budget": {"max_tokens": 5}, "now": 0})
    bad.budget.delegations["cap"].tokens_spent = 6
    assert any("tokens spent above cap" in v for v in check_cross_replica([bad.snapshot()]))

    # A broken audit chain, and a record that differs from the other replica's.
    bad = _tampered(fed)
    bad.audit.records[3]["severity"] = "critical"
    report = check_cross_replica([base, bad.snapshot()])
    assert any("audit chain broken at record index 3" in v for v in report)
    bad.audit.records[3]["hash"] = record_hash(bad.audit.records[3])
    report = check_cross_replica([base, bad.snapshot()], require_equal=False)
    assert any("differ at audit record" in v for v in report)

    # A proposal decided differently on two replicas, and one approved without quorum.
    decided = [p for p in fed.proposals.proposals.values() if p.status.value == "approved"]
    assert decided
    bad = _tampered(fed)
    bad.proposals.proposals[decided[0].proposal_id].status = type(decided[0].status)("rejected")
    report = check_cross_replica([base, bad.snapshot()], require_equal=False)
    assert any("approved on replica 0 but rejected on replica 1" in v for v in report)
    assert any("rejected without enough rejections" in v for v in report)

    # Garbage.
    assert "cannot restore" in check_cross_replica([b"junk"])[0]
