"""FederationStateMachine: cross-machine rules, atomic rejection, snapshots, determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from ruflo_consensus.federation import (
    AuditLog,
    BreakerState,
    BudgetLedger,
    FederationStateMachine,
    FederationWorkload,
    MergeableQTable,
    PeerRegistry,
    ProposalBook,
    QTable,
    TrustLedger,
    TrustLevel,
    check_cross_replica,
    make_handshake_command,
    make_join_command,
    make_privileged_approval_command,
    make_proposal_command,
    make_vote_command,
    replay,
)
from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.statemachine import CommandError, CommandRejected, StateMachine

T0 = 6_000_000_000
MIN = 60_000
DAY = 1440 * MIN


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(name.encode().ljust(32, b"\0"))


def rejected(fed: FederationStateMachine, command: Any, code: str) -> CommandError:
    before = fed.snapshot()
    accepted = fed.accepted
    with pytest.raises(CommandError) as info:
        fed.apply(command)
    assert info.value.code == code, info.value
    assert fed.snapshot() == before and fed.accepted == accepted
    return info.value


def join(fed: FederationStateMachine, peer: str, now: int = T0) -> Any:
    return fed.apply(make_join_command(key(peer), peer, f"wss://{peer}", ["coder"], now))


def handshake(fed: FederationStateMachine, peer: str, now: int = T0, n: int = 0) -> Any:
    nonce = bytes([n]) * 16
    return fed.apply(make_handshake_command(key(peer), peer, f"{peer}-{n}", nonce, now, now))


def federation(*peers: str, attested: bool = True, **kw: Any) -> FederationStateMachine:
    fed = FederationStateMachine(**kw)
    for p in peers:
        join(fed, p)
        if attested:
            handshake(fed, p)
    return fed


def test_every_part_is_a_state_machine() -> None:
    parts = (PeerRegistry, TrustLedger, BudgetLedger, QTable, AuditLog, ProposalBook)
    for cls in (*parts, MergeableQTable, FederationStateMachine):
        assert isinstance(cls(), StateMachine), cls
    assert "federation.send" in FederationStateMachine().ops


def test_same_snapshot_in_processes_with_different_hash_seeds() -> None:
    """str hashing is randomised per process; nothing may depend on it."""
    script = (
        "import hashlib\n"
        "from ruflo_consensus.federation import FederationWorkload, replay\n"
        "w = FederationWorkload(8, peers=5)\n"
        "fed, _ = replay(w.take(600), FederationWorkload(8, peers=5).new_machine())\n"
        "print(hashlib.sha256(fed.snapshot()).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    fed, _ = replay(
        FederationWorkload(8, peers=5).take(600), FederationWorkload(8, peers=5).new_machine()
    )
    digests.add(hashlib.sha256(fed.snapshot()).hexdigest())
    assert len(digests) == 1


def test_join_and_handshake_drive_trust_and_breaker() -> None:
    fed = FederationStateMachine()
    result = join(fed, "a")
    assert result["trust_level"] == "VERIFIED"
    assert fed.budget.state("a") == BreakerState.ACTIVE
    assert fed.audit.records[-1]["event_type"] == "peer-joined"
    assert handshake(fed, "a")["trust_level"] == "ATTESTED"
    events = [r["event_type"] for r in fed.audit.records]
    assert events == ["peer-joined", "handshake-completed", "trust-changed"]
    assert fed.can("a", "send") and not fed.can("a", "share-context")
    assert fed.invariant_violations() == []


def test_send_checks_in_the_spec_order() -> None:
    fed = federation("a", "b")
    join(fed, "v")  # VERIFIED only
    rejected(fed, {"op": "federation.send", "peer": "ghost", "now": T0}, "UNKNOWN_PEER")
    rejected(fed, {"op": "federation.send", "peer": "v", "now": T0}, "NOT_AUTHORIZED")
    big = {"op": "federation.send", "peer": "a", "size_bytes": (1 << 20) + 1, "now": T0}
    rejected(fed, big, "TOO_LARGE")
    odd = {"op": "federation.send", "peer": "a", "message_type": "pizza", "now": T0}
    rejected(fed, odd, "BAD_ARGUMENT")
    result = fed.apply({"op": "federation.send", "peer": "a", "now": T0 + 1})
    assert result == {"peer": "a", "message_type": "task-assignment", "trust_level": "ATTESTED"}
    assert fed.trust.peers["a"].sent == 1
    fed.apply({"op": "budget.suspend", "peer": "b", "now": T0 + 2})
    rejected(fed, {"op": "federation.send", "peer": "b", "now": T0 + 3}, "PEER_SUSPENDED")
    fed.apply({"op": "registry.evict", "peer": "v", "now": T0 + 4})
    # Standing is checked before authorisation: an evicted VERIFIED peer is PEER_EVICTED.
    rejected(fed, {"op": "federation.send", "peer": "v", "now": T0 + 5}, "PEER_EVICTED")


def test_send_with_a_delegation_spends_the_replicated_budget() -> None:
    fed = federation("a", "b")
    fed.apply({"op": "budget.open", "delegation": "d", "budget": {"max_usd": 1.0}, "now": T0})
    send = {"op": "federation.send", "peer": "a", "delegation": "d", "usd": 0.6, "now": T0}
    assert fed.apply(send)["hops"] == 1
    rejected(fed, {**send, "peer": "b", "usd": 0.5}, "BUDGET_EXCEEDED")
    rejected(fed, {**send, "delegation": "zz"}, "UNKNOWN_DELEGATION")
    rejected(fed, {"op": "federation.send", "peer": "a", "usd": 1, "now": T0}, "BAD_ARGUMENT")
    rejected(fed, {"op": "budget.hop", "peer": "a", "now": T0}, "BAD_ARGUMENT")
    assert fed.apply({**send, "op": "budget.hop", "usd": 0.4})["hops"] == 2


def test_spend_policy_suspends_and_is_audited() -> None:
    fed = federation("a")
    fed.apply({"op": "budget.open", "delegation": "d", "budget": {"max_hops": 64}, "now": T0})
    fed.apply({"op": "federation.send", "peer": "a", "delegation": "d", "usd": 5.01, "now": T0})
    assert fed.budget.state("a") == BreakerState.SUSPENDED
    assert "peer-suspended" in [r["event_type"] for r in fed.audit.records]
    assert not fed.can("a", "send")


def test_eviction_moves_registry_and_breaker_together() -> None:
    fed = federation("a")
    fed.apply({"op": "registry.evict", "peer": "a", "reason": "drill", "now": T0 + 1})
    record = fed.registry.get("a")
    assert record is not None and record.status == "evicted"
    assert fed.budget.state("a") == BreakerState.EVICTED
    assert record.session_status(T0 + 2) == "ended"
    rejected(fed, {"op": "budget.evict", "peer": "a", "now": T0 + 2}, "INVALID_TRANSITION")
    fed.apply({"op": "budget.reactivate", "peer": "a", "now": T0 + 3})
    assert record.status == "active" and fed.budget.state("a") == BreakerState.ACTIVE
    assert fed.invariant_violations() == []


def test_suspended_for_a_day_is_evicted_everywhere() -> None:
    fed = federation("a")
    fed.apply({"op": "budget.suspend", "peer": "a", "now": T0})
    rejected(
        fed, {"op": "registry.reactivate", "peer": "a", "now": T0 + 29 * MIN}, "INVALID_TRANSITION"
    )
    fed.apply({"op": "federation.tick", "now": T0 + DAY})
    record = fed.registry.get("a")
    assert record is not None and record.status == "evicted"
    assert fed.budget.state("a") == BreakerState.EVICTED
    assert fed.audit.records[-1]["event_type"] == "peer-evicted"
    assert fed.invariant_violations() == []


def test_integrity_failure_drops_trust_and_closes_the_send_gate() -> None:
    fed = federation("a")
    fed.apply({"op": "trust.record", "peer": "a", "integrity_failures": 1, "now": T0})
    assert fed.trust.level("a") == TrustLevel.UNTRUSTED
    last = fed.audit.records[-1]
    assert (last["event_type"], last["severity"], last["category"]) == (
        "trust-dropped",
        "critical",
        "security",
    )
    rejected(fed, {"op": "federation.send", "peer": "a", "now": T0}, "NOT_AUTHORIZED")
    fed.apply({"op": "trust.reinstate", "peer": "a", "now": T0 + 1})
    assert fed.trust.level("a") == TrustLevel.VERIFIED


def test_votes_need_attested_peers_with_live_sessions() -> None:
    fed = federation("a", "b", "c", "d")
    join(fed, "v")  # VERIFIED: not in the electorate
    created = fed.apply(make_proposal_command("p", "topology-change", {"ring": True}, T0 + 1))
    assert (created["n"], created["quorum"]) == (4, 3)
    rejected(fed, make_vote_command(key("v"), "p", True, T0 + 2, voter="v"), "NOT_ELIGIBLE")
    forged = make_vote_command(key("b"), "p", True, T0 + 2, voter="a")
    rejected(fed, forged, "BAD_SIGNATURE")
    for voter in "abc":
        result = fed.apply(make_vote_command(key(voter), "p", True, T0 + 3, voter=voter))
    assert result["status"] == "approved"
    assert fed.audit.records[-1]["event_type"] == "proposal-approved"
    # Sessions of a, b, c, d were opened at T0 and never heard from since: overdue after 90 s.
    fed.apply({"op": "registry.heartbeat", "peer": "a", "now": T0 + 80_000})
    fed.apply({"op": "registry.heartbeat", "peer": "a", "now": T0 + 160_000})
    later = fed.apply(make_proposal_command("q", "agent-spawn", {}, T0 + 160_000))
    assert later["voters"] == ["a"] and later["quorum"] == 1


def test_a_suspended_member_of_the_electorate_cannot_vote() -> None:
    fed = federation("a", "b", "c")
    fed.apply(make_proposal_command("p", "trust-change", {}, T0))
    fed.apply({"op": "budget.suspend", "peer": "b", "now": T0 + 1})
    rejected(fed, make_vote_command(key("b"), "p", False, T0 + 2, voter="b"), "PEER_SUSPENDED")
    fed.apply({"op": "federation.tick", "now": T0 + 30_000})
    proposal = fed.proposals.get("p")
    assert proposal is not None and proposal.status.value == "expired"
    assert fed.audit.records[-1]["event_type"] == "proposal-expired"


def test_privileged_through_the_federation() -> None:
    alice = key("alice")
    fed = federation("p", approvers={"alice": public_key_bytes(alice)})
    fed.apply({"op": "trust.record", "peer": "p", "sent": 5000, "now": T0})  # -> TRUSTED
    fed.apply({"op": "trust.record", "peer": "p", "now": T0})  # candidate
    assert not fed.can("p", "remote-spawn")
    fed.apply(make_privileged_approval_command(alice, "alice", "p", T0 + 1))
    assert fed.can("p", "remote-spawn")
    assert fed.audit.records[-1]["event_type"] == "privileged-granted"


SEND = "federation.send"
BAD_VOTE = {**make_vote_command(key("b"), "p", True, T0 + 1, voter="b"), "signature": b"x"}
BAD_COMMANDS: list[tuple[Any, str]] = [
    ("not a map", "BAD_COMMAND"),
    ({"now": T0}, "BAD_COMMAND"),
    ({"op": "federation.teleport", "now": T0}, "UNKNOWN_OP"),
    ({"op": "trust.register", "peer": "x", "now": T0}, "UNKNOWN_OP"),
    ({"op": "federation.tick"}, "BAD_ARGUMENT"),
    ({"op": "federation.tick", "now": -5}, "BAD_ARGUMENT"),
    ({"op": "federation.tick", "now": T0, "node": 7}, "BAD_ARGUMENT"),
    ({"op": "federation.send", "peer": "ghost", "now": T0}, "UNKNOWN_PEER"),
    ({"op": "trust.record", "peer": "ghost", "sent": 1, "now": T0}, "UNKNOWN_PEER"),
    ({"op": "trust.record", "peer": "a", "sent": -1, "now": T0}, "BAD_ARGUMENT"),
    (
        {"op": "budget.open", "delegation": "d", "budget": {"max_usd": -1}, "now": T0},
        "INVALID_BUDGET",
    ),
    (
        {"op": "budget.open", "delegation": "d", "budget": {"max_hops": 6.5}, "now": T0},
        "INVALID_BUDGET",
    ),
    ({"op": "budget.open", "delegation": "open", "now": T0}, "DELEGATION_EXISTS"),
    (
        {"op": "budget.hop", "delegation": "open", "peer": "a", "usd": 9, "now": T0},
        "BUDGET_EXCEEDED",
    ),
    ({"op": SEND, "delegation": "open", "peer": "v", "usd": 9, "now": T0}, "NOT_AUTHORIZED"),
    ({"op": "budget.outcome", "peer": "ghost", "ok": True, "now": T0}, "UNKNOWN_PEER"),
    ({"op": "budget.reactivate", "peer": "a", "now": T0}, "INVALID_TRANSITION"),
    ({"op": "registry.reactivate", "peer": "a", "now": T0}, "INVALID_TRANSITION"),
    ({"op": "registry.heartbeat", "peer": "ghost", "now": T0}, "UNKNOWN_PEER"),
    (make_join_command(key("a"), "a", "wss://a", ["coder"], T0), "PEER_EXISTS"),
    ({"op": "qtable.update", "state": "s", "action": 0, "reward": 3, "now": T0}, "BAD_ARGUMENT"),
    ({"op": "audit.append", "event_type": "x", "category": "gossip", "now": T0}, "BAD_ARGUMENT"),
    (make_proposal_command("p", "trust-change", {}, T0), "PROPOSAL_EXISTS"),
    (make_vote_command(key("a"), "p", True, T0, voter="a"), "REPLAYED"),
    (make_vote_command(key("ghost"), "p", True, T0 + 1, voter="ghost"), "UNKNOWN_PEER"),
    (make_vote_command(key("v"), "p", True, T0 + 1, voter="v"), "NOT_ELIGIBLE"),
    (BAD_VOTE, "BAD_SIGNATURE"),
]


@pytest.mark.parametrize(("command", "code"), BAD_COMMANDS)
def test_bad_commands_leave_the_federation_byte_identical(command: Any, code: str) -> None:
    fed = federation("a", "b", "c")
    join(fed, "v")
    fed.apply({"op": "budget.open", "delegation": "open", "budget": {"max_usd": 1}, "now": T0})
    fed.apply({"op": "federation.send", "peer": "a", "delegation": "open", "usd": 0.5, "now": T0})
    fed.apply(make_proposal_command("p", "trust-change", {}, T0))
    fed.apply(make_vote_command(key("a"), "p", True, T0, voter="a"))
    fed.apply({"op": "qtable.update", "state": "s", "action": "coder", "reward": 1, "now": T0})
    rejected(fed, command, code)


def test_snapshot_restore_roundtrip_and_bad_snapshot() -> None:
    fed, _ = replay(FederationWorkload(3).take(400), FederationWorkload(3).new_machine())
    other = FederationStateMachine()
    other.restore(fed.snapshot())
    assert other.snapshot() == fed.snapshot()
    before = other.snapshot()
    for garbage in (b"", b"\x80", fed.snapshot()[:-7]):
        with pytest.raises(CommandError) as info:
            other.restore(garbage)
        assert info.value.code == "BAD_SNAPSHOT"
        assert other.snapshot() == before


def test_two_replicas_reach_byte_identical_snapshots() -> None:
    commands = FederationWorkload(11, peers=6).take(1500)
    a, results_a = replay(commands, FederationWorkload(11, peers=6).new_machine())
    b, results_b = replay(commands, FederationWorkload(11, peers=6).new_machine())
    assert a.snapshot() == b.snapshot()
    assert [type(r) for r in results_a] == [type(r) for r in results_b]
    assert sum(isinstance(r, CommandRejected) for r in results_a) > 50
    assert a.accepted > 900
    # A replica restored from a mid-way snapshot and fed the rest ends in the same state.
    mid, _ = replay(commands[:700], FederationWorkload(11, peers=6).new_machine())
    c = FederationWorkload(11, peers=6).new_machine()
    c.restore(mid.snapshot())
    replay(commands[700:], c)
    assert c.snapshot() == a.snapshot()
    assert check_cross_replica([a.snapshot(), b.snapshot(), c.snapshot()]) == []
