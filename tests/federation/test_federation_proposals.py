"""Proposals: quorum math, approval, rejection, expiry, signed and eligible votes."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import nacl.signing
import pytest

from ruflo_consensus.federation.proposals import (
    MESSAGE_TYPES,
    ProposalBook,
    ProposalStatus,
    make_proposal_command,
    make_vote_command,
    parse_fraction,
    quorum_size,
)
from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.statemachine import CommandError

T0 = 5_000_000_000


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(name.encode().ljust(32, b"\0"))


def rejected(machine: Any, command: Any, code: str) -> None:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before


def book(n: int = 4, level: int = 2) -> ProposalBook:
    b = ProposalBook()
    for i in range(n):
        b.apply(
            {
                "op": "set_voter",
                "peer": f"v{i}",
                "public_key": public_key_bytes(key(f"v{i}")),
                "level": level,
                "now": T0,
            }
        )
    return b


def vote(b: ProposalBook, voter: str, approve: bool, now: int = T0, pid: str = "p") -> Any:
    return b.apply(make_vote_command(key(voter), pid, approve, now, voter=voter))


def create(b: ProposalBook, pid: str = "p", now: int = T0, **kw: Any) -> Any:
    return b.apply(make_proposal_command(pid, "trust-change", {"peer": "x"}, now, **kw))


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4), (7, 5), (9, 6), (10, 7), (100, 67)],
)
def test_quorum_is_ceil_two_thirds(n: int, expected: int) -> None:
    assert quorum_size(n) == expected


def test_quorum_fraction_is_exact() -> None:
    assert 100 * 0.55 > 55  # with floats, ceil(100 x 0.55) would be 56
    assert quorum_size(100, parse_fraction(0.55)) == 55
    assert quorum_size(10, parse_fraction(0.7)) == 7
    assert parse_fraction(2 / 3) == Fraction(2, 3)
    assert parse_fraction([1, 2]) == Fraction(1, 2) and quorum_size(4, Fraction(1, 2)) == 2
    assert parse_fraction(None) == Fraction(2, 3) and parse_fraction(1) == 1
    for bad in (0, 1.5, -0.5, [1, 0], [1], "2/3", True, [1.0, 2]):
        with pytest.raises(CommandError):
            parse_fraction(bad)


def test_n4_approved_at_three_approvals() -> None:
    b = book(4)
    result = create(b)
    assert (result["n"], result["quorum"], result["status"]) == (4, 3, "pending")
    assert result["expires_at"] == T0 + 30_000
    assert vote(b, "v0", True)["status"] == "pending"
    assert vote(b, "v1", True)["status"] == "pending"
    assert vote(b, "v2", True)["status"] == "approved"
    rejected(b, make_vote_command(key("v3"), "p", False, T0, voter="v3"), "PROPOSAL_CLOSED")


def test_n4_rejected_when_rejections_exceed_n_minus_quorum() -> None:
    b = book(4)
    create(b)
    assert vote(b, "v0", False)["status"] == "pending"  # 1 rejection = n - quorum
    result = vote(b, "v1", False)
    assert result["status"] == "rejected" and result["rejections"] == 2


def test_a_changed_vote_replaces_the_old_one() -> None:
    b = book(4)
    create(b)
    vote(b, "v0", False, T0 + 1)
    result = vote(b, "v0", True, T0 + 2)
    assert result["replaced"] and (result["approvals"], result["rejections"]) == (1, 0)
    proposal = b.get("p")
    assert proposal is not None and proposal.votes["v0"] == (True, T0 + 2)
    # Replaying the first (older) signed vote, or the same one again, is refused.
    rejected(b, make_vote_command(key("v0"), "p", False, T0 + 1, voter="v0"), "REPLAYED")
    rejected(b, make_vote_command(key("v0"), "p", True, T0 + 2, voter="v0"), "REPLAYED")


def test_expiry_after_thirty_seconds() -> None:
    b = book(3)
    create(b)
    vote(b, "v0", True, T0 + 29_999)
    rejected(
        b, make_vote_command(key("v1"), "p", True, T0 + 30_000, voter="v1"), "PROPOSAL_EXPIRED"
    )
    assert b.status("p") == ProposalStatus.PENDING
    assert b.status("p", T0 + 30_000) == ProposalStatus.EXPIRED
    assert b.apply({"op": "tick", "now": T0 + 30_000}) == {"expired": ["p"]}
    assert b.status("p") == ProposalStatus.EXPIRED
    proposal = b.get("p")
    assert proposal is not None and proposal.decided_at == T0 + 30_000


def test_a_backdated_vote_cannot_reopen_an_expired_proposal() -> None:
    b = book(3)
    create(b, ttl_ms=1_000)
    b.apply({"op": "tick", "now": T0 + 5_000})
    rejected(b, make_vote_command(key("v0"), "p", True, T0 + 10, voter="v0"), "PROPOSAL_EXPIRED")


def test_expiry_is_materialised_by_any_accepted_command() -> None:
    b = book(3)
    create(b, "p1", ttl_ms=100)
    create(b, "p2", T0 + 100)
    assert b.status("p1") == ProposalStatus.EXPIRED


def test_eligibility() -> None:
    b = book(3)
    b.apply(
        {
            "op": "set_voter",
            "peer": "low",
            "public_key": public_key_bytes(key("low")),
            "level": 1,
            "now": T0,
        }
    )
    result = create(b)
    assert result["voters"] == ["v0", "v1", "v2"] and result["quorum"] == 2
    rejected(b, make_vote_command(key("low"), "p", True, T0, voter="low"), "NOT_ELIGIBLE")
    # A peer that becomes eligible after creation is not in the electorate.
    b.apply(
        {
            "op": "set_voter",
            "peer": "late",
            "public_key": public_key_bytes(key("late")),
            "level": 3,
            "now": T0,
        }
    )
    rejected(b, make_vote_command(key("late"), "p", True, T0, voter="late"), "NOT_ELIGIBLE")
    # A member that dropped below ATTESTED or was suspended may no longer vote.
    pk = public_key_bytes(key("v0"))
    b.apply({"op": "set_voter", "peer": "v0", "public_key": pk, "level": 0, "now": T0})
    rejected(b, make_vote_command(key("v0"), "p", True, T0, voter="v0"), "NOT_ELIGIBLE")
    pk1 = public_key_bytes(key("v1"))
    b.apply(
        {"op": "set_voter", "peer": "v1", "public_key": pk1, "level": 2, "state": "SUSPENDED",
         "now": T0}
    )  # fmt: skip
    rejected(b, make_vote_command(key("v1"), "p", True, T0, voter="v1"), "PEER_SUSPENDED")
    rejected(b, make_vote_command(key("x"), "p", True, T0, voter="ghost"), "UNKNOWN_PEER")


def test_signatures() -> None:
    b = book(3)
    create(b)
    rejected(b, make_vote_command(key("v1"), "p", True, T0, voter="v0"), "BAD_SIGNATURE")
    flipped = make_vote_command(key("v0"), "p", True, T0, voter="v0")
    flipped["approve"] = False
    rejected(b, flipped, "BAD_SIGNATURE")
    other = make_vote_command(key("v0"), "q", True, T0, voter="v0")
    other["proposal_id"] = "p"
    rejected(b, other, "BAD_SIGNATURE")
    for bad in (b"", b"\x00" * 64, "sig", None, b"\x01" * 65):
        cmd = make_vote_command(key("v0"), "p", True, T0, voter="v0")
        cmd["signature"] = bad
        rejected(b, cmd, "BAD_SIGNATURE")


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (make_proposal_command("p", "trust-change", {}, T0), "PROPOSAL_EXISTS"),
        (make_proposal_command("q", "pizza-order", {}, T0), "BAD_ARGUMENT"),
        (make_proposal_command("q", "agent-spawn", {1, 2}, T0), "BAD_ARGUMENT"),
        (make_proposal_command("q", "agent-spawn", "x" * (1 << 20), T0), "TOO_LARGE"),
        (make_proposal_command("q", "agent-spawn", {}, T0, quorum_fraction=0), "BAD_ARGUMENT"),
        (make_proposal_command("q", "agent-spawn", {}, T0, ttl_ms=0), "BAD_ARGUMENT"),
        (make_vote_command(key("v0"), "nope", True, T0, voter="v0"), "UNKNOWN_PROPOSAL"),
        (
            {"op": "vote", "proposal_id": "p", "voter": "v0", "approve": 1, "now": T0},
            "BAD_ARGUMENT",
        ),
        ({"op": "remove_voter", "peer": "ghost", "now": T0}, "UNKNOWN_PEER"),
    ],
)
def test_bad_commands_leave_state_byte_identical(command: dict[str, Any], code: str) -> None:
    b = book(3)
    create(b)
    vote(b, "v0", True)
    rejected(b, command, code)


def test_no_eligible_voters() -> None:
    b = book(2, level=1)
    rejected(b, make_proposal_command("p", "topology-change", {}, T0), "NO_ELIGIBLE_VOTERS")
    assert len(MESSAGE_TYPES) == 17


def test_snapshot_roundtrip() -> None:
    b = book(4)
    create(b, quorum_fraction=[3, 4])
    vote(b, "v0", True)
    vote(b, "v1", False)
    other = ProposalBook()
    other.restore(b.snapshot())
    assert other.snapshot() == b.snapshot()
    proposal = other.get("p")
    assert proposal is not None and proposal.fraction == Fraction(3, 4) and proposal.quorum == 3
