"""Trust ledger: score formula, ladder thresholds, hysteresis, instant drops, PRIVILEGED."""

from __future__ import annotations

from typing import Any

import nacl.signing
import pytest

from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.federation.trust import (
    CAPABILITIES,
    TrustLedger,
    TrustLevel,
    TrustPolicy,
    ladder_step,
    make_add_approver_command,
    make_privileged_approval_command,
    trust_score,
)
from ruflo_consensus.statemachine import CommandError

T0 = 1_000_000_000
HOUR = 3_600_000
V, A, T, P, U = (
    TrustLevel.VERIFIED,
    TrustLevel.ATTESTED,
    TrustLevel.TRUSTED,
    TrustLevel.PRIVILEGED,
    TrustLevel.UNTRUSTED,
)


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(name.encode().ljust(32, b"\0"))


def rejected(machine: Any, command: dict[str, Any], code: str) -> CommandError:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before
    return info.value


def ledger(*peers: str, approvers: dict[str, bytes] | None = None) -> TrustLedger:
    tl = TrustLedger(approvers=approvers)
    for p in peers:
        tl.apply({"op": "register", "peer": p, "now": T0})
    return tl


def record(tl: TrustLedger, peer: str, now: int = T0, **fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = tl.apply({"op": "trust.record", "peer": peer, "now": now, **fields})
    return result


# ----------------------------------------------------------------- the formula


@pytest.mark.parametrize(
    ("sent", "received", "failures", "threats", "uptime", "expected"),
    [
        (0, 0, 0, 0, 1.0, 0.6),  # total 0: success 0, threat 0, integrity 1
        (0, 0, 0, 0, 0.0, 0.4),
        (100, 0, 0, 0, 1.0, 1.0),
        (90, 10, 5, 1, 0.5, 0.85),  # .4*.95 + .2*.5 + .2*.9 + .2*.95
        (50, 50, 0, 20, 1.0, 0.8),  # threat saturates at 1
        (10, 0, 20, 0, 0.0, 0.0),  # more failures than messages: clamped at 0
    ],
)
def test_score_formula(
    sent: int, received: int, failures: int, threats: int, uptime: float, expected: float
) -> None:
    assert trust_score(sent, received, failures, threats, uptime) == pytest.approx(expected)


# ------------------------------------------------------------------ the ladder


@pytest.mark.parametrize(
    ("level", "score", "n", "expected", "candidate"),
    [
        (V, 0.70, 50, A, False),
        (V, 0.6999, 50, V, False),
        (V, 1.0, 49, V, False),  # minimum interactions
        (V, 0.10, 10_000, V, False),  # VERIFIED never falls by score
        (A, 0.85, 500, T, False),
        (A, 0.85, 499, A, False),
        (A, 0.50, 0, A, False),  # hysteresis: 0.50..0.70 keeps ATTESTED
        (A, 0.4999, 1000, V, False),
        (T, 0.95, 5000, T, True),  # PRIVILEGED is proposed, never applied
        (T, 0.95, 4999, T, False),
        (T, 0.65, 0, T, False),
        (T, 0.6499, 0, A, False),
        (P, 0.80, 0, P, False),
        (P, 0.7999, 10_000, T, False),
        (P, 1.0, 10_000, P, False),
        (U, 1.0, 10_000, U, False),  # UNTRUSTED needs an operator
    ],
)
def test_ladder_thresholds(
    level: TrustLevel, score: float, n: int, expected: TrustLevel, candidate: bool
) -> None:
    assert ladder_step(level, score, n) == (expected, candidate)


def test_new_peer_starts_verified_and_handshake_attests() -> None:
    tl = ledger("a")
    assert tl.level("a") == V
    assert tl.peers["a"].score == pytest.approx(0.6)
    result = tl.apply({"op": "handshake", "peer": "a", "now": T0})
    assert result["level"] == "ATTESTED" and result["changed"]


def test_min_interactions_and_one_level_per_evaluation() -> None:
    tl = ledger("a")
    assert record(tl, "a", sent=49)["level"] == "VERIFIED"  # score 1.0 but only 49
    assert record(tl, "a", received=1)["level"] == "ATTESTED"  # 50 interactions
    tl2 = ledger("b")
    assert record(tl2, "b", sent=10_000)["level"] == "ATTESTED"  # one step only
    assert record(tl2, "b")["level"] == "TRUSTED"
    result = record(tl2, "b")
    assert result["level"] == "TRUSTED" and result["privileged_candidate"]


def test_hysteresis_through_the_ledger() -> None:
    tl = ledger("a")
    tl.apply({"op": "handshake", "peer": "a", "now": T0})
    # No traffic, uptime 0.55: score 0.4 + 0.2*0.55 = 0.51 -> still ATTESTED (>= 0.50).
    assert record(tl, "a", uptime=0.55)["level"] == "ATTESTED"
    # Uptime 0.45: 0.49 < 0.50 -> VERIFIED.
    assert record(tl, "a", uptime=0.45)["level"] == "VERIFIED"
    # Back to 0.6 (uptime 1.0) with no traffic: not enough interactions to climb back.
    assert record(tl, "a", uptime=1.0)["level"] == "VERIFIED"


def test_trusted_downgrade_below_065() -> None:
    # With the default 24 h decay at most 24 threats (each > 1 h apart) are "recent", which
    # cannot pull a 500-interaction peer below 0.65; a long decay window shows the rung.
    tl = TrustLedger(TrustPolicy(threat_decay_ms=1000 * HOUR))
    tl.apply({"op": "register", "peer": "a", "now": T0})
    record(tl, "a", sent=500)
    assert record(tl, "a")["level"] == "TRUSTED"
    # 50 threat detections spread over > 1 h each (no instant drop): threat = min(1, 10*50/500)
    # = 1, and with uptime 0 the score is 0.4 + 0 + 0 + 0.2 = 0.6 < 0.65.
    now = T0
    levels = []
    for _ in range(50):
        now += HOUR + 1
        levels.append(record(tl, "a", now=now, threats=1, uptime=0.0)["level"])
    # threat > 0.75 is needed (0.6 + 0.2 * (1 - threat) < 0.65): the 38th detection.
    assert levels.index("ATTESTED") == 37
    assert levels[:37] == ["TRUSTED"] * 37 and set(levels[37:]) == {"ATTESTED"}
    assert tl.peers["a"].score == pytest.approx(0.6)


# --------------------------------------------------------------- instant drops


def test_integrity_failure_drops_instantly_with_score_zero() -> None:
    tl = ledger("a")
    record(tl, "a", sent=1000)
    record(tl, "a")
    assert tl.level("a") == T
    result = record(tl, "a", sent=1, integrity_failures=1)
    assert result["level"] == "UNTRUSTED" and result["dropped"]
    assert result["drop_reason"] == "integrity-failure"
    assert tl.peers["a"].score == 0.0
    # Perfect behaviour afterwards does not lift it: an operator must reinstate.
    assert record(tl, "a", sent=10_000)["level"] == "UNTRUSTED"
    assert tl.peers["a"].score == 0.0


def test_session_hijack_drops_instantly() -> None:
    tl = ledger("a")
    assert record(tl, "a", hijack=True)["drop_reason"] == "session-hijack"
    assert tl.level("a") == U


def test_two_threats_within_one_hour_drop() -> None:
    tl = ledger("a", "b", "c")
    record(tl, "a", sent=100)
    assert not record(tl, "a", now=T0, threats=1)["dropped"]
    assert record(tl, "a", now=T0 + HOUR - 1, threats=1)["drop_reason"] == "threat-detections"
    assert tl.level("a") == U
    # Exactly one hour apart is not "within one hour" (the clock is now at T0 + HOUR - 1).
    record(tl, "b", now=T0 + 2 * HOUR, threats=1)
    assert not record(tl, "b", now=T0 + 3 * HOUR, threats=1)["dropped"]
    assert tl.level("b") == V
    # Two in one record.
    assert record(tl, "c", threats=2)["level"] == "UNTRUSTED"


def test_threats_decay_after_24_hours() -> None:
    tl = ledger("a")
    record(tl, "a", sent=100, threats=1)
    # threat = 10*1/100 = 0.1 -> score 0.4 + 0.2 + 0.18 + 0.2 = 0.98
    assert tl.peers["a"].score == pytest.approx(0.98)
    record(tl, "a", now=T0 + 24 * HOUR)
    assert tl.peers["a"].score == pytest.approx(1.0)
    assert tl.peers["a"].threats_total == 1


def test_reinstate_only_from_untrusted() -> None:
    tl = ledger("a")
    rejected(tl, {"op": "reinstate", "peer": "a", "now": T0}, "INVALID_TRANSITION")
    record(tl, "a", hijack=True)
    result = tl.apply({"op": "reinstate", "peer": "a", "now": T0 + 1})
    assert result["level"] == "VERIFIED"
    assert tl.peers["a"].score > 0


# ------------------------------------------------------------------ PRIVILEGED


def privileged_candidate() -> tuple[TrustLedger, nacl.signing.SigningKey]:
    alice = key("alice")
    tl = ledger("p", approvers={"alice": public_key_bytes(alice)})
    record(tl, "p", sent=5000)  # VERIFIED -> ATTESTED
    record(tl, "p")  # -> TRUSTED
    assert record(tl, "p")["privileged_candidate"]
    return tl, alice


def test_privileged_needs_signed_human_approval() -> None:
    tl, alice = privileged_candidate()
    assert tl.level("p") == T
    cmd = make_privileged_approval_command(alice, "alice", "p", T0 + 10)
    result = tl.apply(cmd)
    assert result["level"] == "PRIVILEGED"
    assert tl.can("p", "remote-spawn")
    rejected(tl, cmd, "REPLAYED")


def test_privileged_rejections() -> None:
    tl, alice = privileged_candidate()
    mallory = key("mallory")
    rejected(tl, make_privileged_approval_command(mallory, "mallory", "p", T0), "UNKNOWN_APPROVER")
    rejected(tl, make_privileged_approval_command(mallory, "alice", "p", T0), "BAD_SIGNATURE")
    forged = make_privileged_approval_command(alice, "alice", "p", T0)
    forged["peer"] = "q"
    rejected(tl, forged, "UNKNOWN_PEER")
    tl.apply({"op": "register", "peer": "q", "now": T0})
    rejected(tl, forged, "BAD_SIGNATURE")  # signed for p, not q
    rejected(tl, make_privileged_approval_command(alice, "alice", "q", T0), "NOT_ELIGIBLE")
    record(tl, "p", now=T0 + 600_000)
    stale = make_privileged_approval_command(alice, "alice", "p", T0)
    rejected(tl, stale, "STALE_TIMESTAMP")  # more than 5 minutes old
    short = make_privileged_approval_command(alice, "alice", "p", T0 + 600_000)
    short["signature"] = short["signature"][:32]
    rejected(tl, short, "BAD_SIGNATURE")


def test_a_candidate_that_degrades_cannot_be_granted() -> None:
    tl, alice = privileged_candidate()
    record(tl, "p", uptime=0.0, threats=1)  # score drops below 0.95: no longer a candidate
    assert not tl.peers["p"].privileged_candidate
    rejected(tl, make_privileged_approval_command(alice, "alice", "p", T0), "NOT_ELIGIBLE")


def test_approvers_endorse_new_approvers() -> None:
    tl, alice = privileged_candidate()
    bob = key("bob")
    tl.apply(make_add_approver_command(alice, "alice", "bob", bob, T0))
    assert tl.apply(make_privileged_approval_command(bob, "bob", "p", T0 + 1))["approver"] == "bob"
    carol = key("carol")
    rejected(tl, make_add_approver_command(carol, "carol", "dave", carol, T0), "UNKNOWN_APPROVER")


# ------------------------------------------------------------------ capabilities


def test_capability_gates() -> None:
    tl = ledger("a")
    assert tl.can("a", "discovery") and tl.can("a", "ping") and not tl.can("a", "send")
    tl.apply({"op": "handshake", "peer": "a", "now": T0})
    assert tl.can("a", "send") and tl.can("a", "query-redacted")
    assert not tl.can("a", "share-context")
    assert not tl.can("nobody", "discovery")
    with pytest.raises(ValueError):
        tl.can("a", "teleport")
    assert CAPABILITIES["remote-spawn"] == P and CAPABILITIES["collaborative-task"] == T


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"op": "record", "peer": "ghost", "sent": 1, "now": T0}, "UNKNOWN_PEER"),
        ({"op": "record", "peer": "a", "sent": -1, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "record", "peer": "a", "sent": True, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "record", "peer": "a", "uptime": 1.5, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "record", "peer": "a", "uptime": float("nan"), "now": T0}, "BAD_ARGUMENT"),
        ({"op": "record", "peer": "a", "sent": 1, "maxHops": 1, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "record", "peer": "a", "sent": 1}, "BAD_ARGUMENT"),
        ({"op": "record", "peer": "a", "sent": 1, "now": 1.5}, "BAD_ARGUMENT"),
        ({"op": "register", "peer": "a", "now": T0}, "PEER_EXISTS"),
        ({"op": "register", "peer": "", "now": T0}, "BAD_ARGUMENT"),
        ({"op": "promote", "peer": "a", "now": T0}, "UNKNOWN_OP"),
        ({"op": "budget.open", "now": T0}, "UNKNOWN_OP"),
        (["record"], "BAD_COMMAND"),
    ],
)
def test_bad_commands_leave_state_byte_identical(command: Any, code: str) -> None:
    tl = ledger("a")
    record(tl, "a", sent=10, threats=1)
    rejected(tl, command, code)


def test_snapshot_roundtrip() -> None:
    tl, _ = privileged_candidate()
    other = TrustLedger()
    other.restore(tl.snapshot())
    assert other.snapshot() == tl.snapshot()
    assert other.level("p") == T and other.approvers == tl.approvers
