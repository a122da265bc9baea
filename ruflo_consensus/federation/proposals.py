"""Federated proposals (``federation_consensus``) with signed, replicated votes.

A proposal carries a message type and a payload. Its electorate is fixed when it is created:
the peers eligible at that moment (ATTESTED or above and ACTIVE; in the combined machine also
with a live session), ``n`` of them. ``quorum = ceil(n x fraction)`` with the fraction kept as
an exact rational (2/3 by default), so ``n = 4`` gives 3 and no float rounding can move it.

* approved when approvals ≥ quorum;
* rejected when rejections > n - quorum;
* expired when neither happened within its time to live (30 s by default).

The two conditions cannot both hold (approvals + rejections ≤ n), and the first outcome is
final. Votes are Ed25519-signed by the voter over ``(proposal id, voter, approve, now)``; one
vote per peer, a newer vote replaces the older one, an older or equal one is a replay. Only
members of the electorate that are still eligible when they vote may vote. The original
recorded no votes and let anyone vote (**gap** closed).

Commands (``proposals.`` prefix optional; ``now`` in ms)::

    {"op": "create", "proposal_id": id, "message_type": "trust-change", "payload": any,
     "quorum_fraction": 0.667 | [2, 3] | None, "ttl_ms": 30000 | None, "proposer": p?,
     "now": t}
    {"op": "vote", "proposal_id": id, "voter": p, "approve": bool, "signature": b"...",
     "now": t}
    {"op": "tick", "now": t}                                  # materialise expiries
    {"op": "set_voter", "peer": p, "public_key": b"...", "level": 2, "state": "ACTIVE",
     "now": t}                                                # standalone roster only
    {"op": "remove_voter", "peer": p, "now": t}               # standalone roster only
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol, Self

import nacl.signing

from ruflo_consensus.federation.base import PlannedMachine
from ruflo_consensus.federation.errors import (
    BadArgument,
    BadSnapshot,
    NoEligibleVoters,
    NotEligible,
    PeerEvicted,
    PeerSuspended,
    ProposalClosed,
    ProposalExists,
    ProposalExpired,
    Replayed,
    UnknownPeer,
    UnknownProposal,
)
from ruflo_consensus.federation.signing import PUBLIC_KEY_LEN, sign_statement, verify_statement
from ruflo_consensus.federation.validation import (
    Commit,
    check_fields,
    check_value,
    opt_int,
    opt_str,
    req_bool,
    req_bytes,
    req_int,
    req_str,
)
from ruflo_consensus.federation.wire import (
    w_bool,
    w_bytes,
    w_choice,
    w_clock,
    w_int,
    w_list,
    w_map,
    w_opt_text,
    w_opt_time,
    w_row,
    w_rows,
    w_text,
    w_time,
    w_value,
)

__all__ = [
    "CONSENSUS_MESSAGE_TYPES",
    "DEFAULT_QUORUM",
    "DEFAULT_TTL_MS",
    "MESSAGE_TYPES",
    "VOTE_KIND",
    "Electorate",
    "Proposal",
    "ProposalBook",
    "ProposalStatus",
    "RosterElectorate",
    "make_proposal_command",
    "make_vote_command",
    "parse_fraction",
    "quorum_size",
    "vote_statement",
]

MESSAGE_TYPES = (
    "task-assignment",
    "memory-query",
    "memory-response",
    "context-share",
    "status-broadcast",
    "trust-change",
    "topology-change",
    "agent-spawn",
    "heartbeat",
    "challenge",
    "challenge-response",
    "handshake-init",
    "handshake-accept",
    "handshake-reject",
    "session-terminate",
    "claim-event",
    "agent-handoff",
)
"""The 17 envelope message types (spec)."""
CONSENSUS_MESSAGE_TYPES = frozenset(
    {"trust-change", "topology-change", "agent-spawn", "agent-handoff"}
)
"""Message types that require consensus (spec)."""
DEFAULT_QUORUM = Fraction(2, 3)
"""Default quorum fraction (spec)."""
DEFAULT_TTL_MS = 30_000
"""Proposals expire after 30 s by default (spec)."""
MAX_TTL_MS = 86_400_000
"""Longest time to live accepted (our choice)."""
VOTE_KIND = "ruflo.vote.v1"
"""Domain tag of signed votes."""
ATTESTED = 2
"""Lowest trust level that may vote."""
MAX_QUORUM_DENOMINATOR = 1_000_000
"""Largest denominator of a quorum fraction (in lowest terms), so its terms stay small."""
ROSTER_STATES = ("ACTIVE", "SUSPENDED", "EVICTED")
"""Standing of a standalone roster entry."""


class ProposalStatus(enum.StrEnum):
    """Lifecycle of a proposal; everything but PENDING is final."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


def quorum_size(n: int, fraction: Fraction = DEFAULT_QUORUM) -> int:
    """``ceil(n x fraction)`` in exact integer arithmetic."""
    return -(-n * fraction.numerator // fraction.denominator)


def parse_fraction(value: Any) -> Fraction:
    """A quorum fraction in (0, 1]: ``None`` (2/3), a number, or ``[numerator, denominator]``.

    Floats are turned into the nearest fraction with a denominator up to 1000, so ``2/3``
    written as ``0.6666666666666666`` is exactly 2/3.
    """
    if value is None:
        return DEFAULT_QUORUM
    try:
        if isinstance(value, (list, tuple)):
            if len(value) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in value
            ):
                raise ValueError("need two integers")
            frac = Fraction(value[0], value[1])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            frac = Fraction(value).limit_denominator(1000)
        else:
            raise ValueError("not a number")
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise BadArgument(f"'quorum_fraction' is invalid: {exc}") from None
    if not 0 < frac <= 1:
        raise BadArgument("'quorum_fraction' must be in (0, 1]")
    if frac.denominator > MAX_QUORUM_DENOMINATOR:
        raise BadArgument(
            f"'quorum_fraction' needs a denominator of at most {MAX_QUORUM_DENOMINATOR}"
        )
    return frac


def vote_statement(proposal_id: str, voter: str, approve: bool, now: int) -> dict[str, Any]:
    """The statement a vote signature covers."""
    return {
        "kind": VOTE_KIND,
        "proposal_id": proposal_id,
        "voter": voter,
        "approve": approve,
        "now": now,
    }


class Electorate(Protocol):
    """Who may vote: supplied by the roster (standalone) or by the federation machine."""

    def eligible_voters(self, t: int) -> list[str]:
        """Sorted ids of the peers eligible to vote at ``t``."""
        ...

    def voter_key(self, peer: str, t: int) -> bytes:
        """The public key of ``peer``; raise UNKNOWN_PEER / PEER_SUSPENDED / PEER_EVICTED."""
        ...

    def is_eligible(self, peer: str, t: int) -> bool:
        """True when ``peer`` may vote at ``t`` (ATTESTED or above, in good standing)."""
        ...


@dataclass(slots=True)
class Proposal:
    """A replicated proposal and its tally."""

    proposal_id: str
    message_type: str
    payload: Any
    proposer: str | None
    fraction: Fraction
    created_at: int
    expires_at: int
    voters: list[str]
    quorum: int
    votes: dict[str, tuple[bool, int]] = field(default_factory=dict)
    status: ProposalStatus = ProposalStatus.PENDING
    decided_at: int | None = None

    @property
    def n(self) -> int:
        """Size of the electorate."""
        return len(self.voters)

    def tally(self) -> tuple[int, int]:
        """``(approvals, rejections)`` of the current votes."""
        approvals = sum(1 for approve, _ in self.votes.values() if approve)
        return approvals, len(self.votes) - approvals

    def effective_status(self, t: int) -> ProposalStatus:
        """The status at ``t``, counting an expiry that is due but not yet materialised."""
        if self.status == ProposalStatus.PENDING and t >= self.expires_at:
            return ProposalStatus.EXPIRED
        return self.status

    def describe(self) -> dict[str, Any]:
        """Summary map used in results."""
        approvals, rejections = self.tally()
        return {
            "proposal_id": self.proposal_id,
            "status": self.status.value,
            "approvals": approvals,
            "rejections": rejections,
            "quorum": self.quorum,
            "n": self.n,
        }

    def to_wire(self) -> list[Any]:
        """Plain list form used in snapshots."""
        return [
            self.proposal_id,
            self.message_type,
            self.payload,
            self.proposer,
            self.fraction.numerator,
            self.fraction.denominator,
            self.created_at,
            self.expires_at,
            list(self.voters),
            self.quorum,
            [[v, a, ts] for v, (a, ts) in sorted(self.votes.items())],
            self.status.value,
            self.decided_at,
        ]

    @classmethod
    def from_wire(cls, value: Any) -> Proposal:
        """Inverse of :meth:`to_wire`; every field checked, ``BadSnapshot`` otherwise."""
        row = w_row(value, "proposal", 13)
        pid, mtype, payload, proposer, num, den, created, expires = row[:8]
        voters, quorum, votes, status, decided = row[8:]
        denominator = w_int(den, "denominator", lo=1, hi=MAX_QUORUM_DENOMINATOR)
        fraction = Fraction(w_int(num, "numerator", lo=1, hi=denominator), denominator)
        names = [w_text(v, "voter") for v in w_list(voters, "voters")]
        if len(set(names)) != len(names):
            raise BadSnapshot("a voter appears twice in an electorate")
        ballots: dict[str, tuple[bool, int]] = {}
        for voter, approve, at in w_rows(votes, "votes", 3):
            name = w_text(voter, "voter")
            if name in ballots:
                raise BadSnapshot(f"two votes by {name!r}")
            ballots[name] = (w_bool(approve, "approve"), w_time(at, "vote time"))
        return cls(
            proposal_id=w_text(pid, "proposal_id"),
            message_type=w_choice(mtype, "message_type", MESSAGE_TYPES),
            payload=w_value(payload, "payload"),
            proposer=w_opt_text(proposer, "proposer"),
            fraction=fraction,
            created_at=w_time(created, "created_at"),
            expires_at=w_time(expires, "expires_at"),
            voters=names,
            quorum=w_int(quorum, "quorum", hi=len(names)),
            votes=ballots,
            status=ProposalStatus(w_choice(status, "status", [x.value for x in ProposalStatus])),
            decided_at=w_opt_time(decided, "decided_at"),
        )


class RosterElectorate:
    """The standalone machine's electorate: a replicated roster of voters and their levels."""

    def __init__(self) -> None:
        self.voters: dict[str, tuple[bytes, int, str]] = {}

    def eligible_voters(self, t: int) -> list[str]:
        """Sorted ids of ACTIVE roster entries at ATTESTED or above."""
        return sorted(p for p in self.voters if self.is_eligible(p, t))

    def voter_key(self, peer: str, t: int) -> bytes:
        """Public key of a known voter in good standing."""
        entry = self.voters.get(peer)
        if entry is None:
            raise UnknownPeer(f"no voter {peer!r}")
        key, _, state = entry
        if state == "SUSPENDED":
            raise PeerSuspended(f"peer {peer!r} is suspended")
        if state == "EVICTED":
            raise PeerEvicted(f"peer {peer!r} is evicted")
        return key

    def is_eligible(self, peer: str, t: int) -> bool:
        """True for an ACTIVE voter at ATTESTED or above."""
        entry = self.voters.get(peer)
        return entry is not None and entry[1] >= ATTESTED and entry[2] == "ACTIVE"


class ProposalBook(PlannedMachine):
    """Replicated proposals with signed votes; standalone it keeps its own voter roster."""

    namespace = "proposals"
    ops = ("set_voter", "remove_voter", "create", "vote", "tick")

    def __init__(self) -> None:
        super().__init__()
        self.roster = RosterElectorate()
        self.electorate: Electorate = self.roster
        self.proposals: dict[str, Proposal] = {}

    # ----------------------------------------------------------------- queries

    def get(self, proposal_id: str) -> Proposal | None:
        """The proposal or ``None``."""
        return self.proposals.get(proposal_id)

    def status(self, proposal_id: str, t: int | None = None) -> ProposalStatus:
        """The proposal's status (effective at ``t`` when given)."""
        proposal = self.proposals.get(proposal_id)
        if proposal is None:
            raise UnknownProposal(f"no proposal {proposal_id!r}")
        return proposal.status if t is None else proposal.effective_status(t)

    # ------------------------------------------------------------------ plans

    def _plan_set_voter(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "public_key", "level", "state"))
        peer = req_str(cmd, "peer")
        key = req_bytes(cmd, "public_key", length=PUBLIC_KEY_LEN)
        level = req_int(cmd, "level", lo=0, hi=4)
        state = opt_str(cmd, "state") or "ACTIVE"
        if state not in ROSTER_STATES:
            raise BadArgument("'state' must be ACTIVE, SUSPENDED or EVICTED")

        def commit() -> dict[str, Any]:
            self.roster.voters[peer] = (key, level, state)
            return {"peer": peer, "eligible": self.roster.is_eligible(peer, t)}

        return commit

    def _plan_remove_voter(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        peer = req_str(cmd, "peer")
        if peer not in self.roster.voters:
            raise UnknownPeer(f"no voter {peer!r}")

        def commit() -> dict[str, Any]:
            del self.roster.voters[peer]
            return {"peer": peer}

        return commit

    def _plan_create(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(
            cmd, ("proposal_id", "message_type", "payload", "quorum_fraction", "ttl_ms", "proposer")
        )
        pid = req_str(cmd, "proposal_id")
        if pid in self.proposals:
            raise ProposalExists(f"proposal {pid!r} already exists")
        mtype = req_str(cmd, "message_type", max_len=64)
        if mtype not in MESSAGE_TYPES:
            raise BadArgument(f"unknown message type {mtype!r}")
        payload = check_value(cmd.get("payload"), "payload")
        fraction = parse_fraction(cmd.get("quorum_fraction"))
        ttl = opt_int(cmd, "ttl_ms", DEFAULT_TTL_MS, lo=1, hi=MAX_TTL_MS)
        proposer = opt_str(cmd, "proposer")
        voters = self.electorate.eligible_voters(t)
        if not voters:
            raise NoEligibleVoters("no peer is eligible to vote")

        def commit() -> dict[str, Any]:
            proposal = Proposal(
                proposal_id=pid,
                message_type=mtype,
                payload=payload,
                proposer=proposer,
                fraction=fraction,
                created_at=t,
                expires_at=t + ttl,
                voters=voters,
                quorum=quorum_size(len(voters), fraction),
            )
            self.proposals[pid] = proposal
            out = proposal.describe()
            out["expires_at"] = proposal.expires_at
            out["voters"] = list(voters)
            return out

        return commit

    def _plan_vote(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("proposal_id", "voter", "approve", "signature"))
        pid = req_str(cmd, "proposal_id")
        proposal = self.proposals.get(pid)
        if proposal is None:
            raise UnknownProposal(f"no proposal {pid!r}")
        voter = req_str(cmd, "voter")
        key = self.electorate.voter_key(voter, t)
        approve = req_bool(cmd, "approve")
        signed_at = cmd["now"]
        verify_statement(key, vote_statement(pid, voter, approve, signed_at), cmd.get("signature"))
        if voter not in proposal.voters or not self.electorate.is_eligible(voter, t):
            raise NotEligible(f"peer {voter!r} may not vote on {pid!r}")
        status = proposal.effective_status(t)
        if status == ProposalStatus.EXPIRED:
            raise ProposalExpired(f"proposal {pid!r} has expired")
        if status != ProposalStatus.PENDING:
            raise ProposalClosed(f"proposal {pid!r} is already {status.value}")
        previous = proposal.votes.get(voter)
        if previous is not None and signed_at <= previous[1]:
            raise Replayed(f"a vote by {voter!r} at or after this time is already recorded")

        def commit() -> dict[str, Any]:
            proposal.votes[voter] = (approve, signed_at)
            approvals, rejections = proposal.tally()
            if approvals >= proposal.quorum:
                proposal.status = ProposalStatus.APPROVED
                proposal.decided_at = t
            elif rejections > proposal.n - proposal.quorum:
                proposal.status = ProposalStatus.REJECTED
                proposal.decided_at = t
            out = proposal.describe()
            out["replaced"] = previous is not None
            return out

        return commit

    def _plan_tick(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ())
        return lambda: {"expired": [c["proposal_id"] for c in self.advance(t)]}

    def advance(self, t: int) -> list[dict[str, Any]]:
        """Mark pending proposals whose time to live has passed as EXPIRED."""
        changes = []
        for pid in sorted(self.proposals):
            proposal = self.proposals[pid]
            if proposal.effective_status(t) == ProposalStatus.EXPIRED and (
                proposal.status == ProposalStatus.PENDING
            ):
                proposal.status = ProposalStatus.EXPIRED
                proposal.decided_at = proposal.expires_at
                changes.append(proposal.describe())
        return changes

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form of the whole state."""
        return {
            "clock": self.clock,
            "roster": [[p, *self.roster.voters[p]] for p in sorted(self.roster.voters)],
            "proposals": [self.proposals[p].to_wire() for p in sorted(self.proposals)],
        }

    def _blank(self) -> Self:
        fresh = type(self)()
        if self.electorate is not self.roster:
            fresh.electorate = self.electorate  # the federation's electorate stays in place
        return fresh

    def _read_wire(self, value: Any) -> None:
        wire = w_map(value, "proposals", ("clock", "roster", "proposals"))
        self.clock = w_clock(wire["clock"])
        for peer, key, level, state in w_rows(wire["roster"], "roster", 4):
            name = w_text(peer, "roster peer")
            if name in self.roster.voters:
                raise BadSnapshot(f"roster peer {name!r} appears twice")
            self.roster.voters[name] = (
                w_bytes(key, "public_key", length=PUBLIC_KEY_LEN),
                w_int(level, "level", hi=4),
                w_choice(state, "state", ROSTER_STATES),
            )
        for raw in w_list(wire["proposals"], "proposals"):
            proposal = Proposal.from_wire(raw)
            if proposal.proposal_id in self.proposals:
                raise BadSnapshot(f"proposal {proposal.proposal_id!r} appears twice")
            self.proposals[proposal.proposal_id] = proposal


# ------------------------------------------------------------- client helpers


def make_vote_command(
    signing_key: nacl.signing.SigningKey,
    proposal_id: str,
    approve: bool,
    now: int,
    *,
    voter: str,
    op: str = "proposals.vote",
) -> dict[str, Any]:
    """Build a ``proposals.vote`` command signed by ``voter``'s key."""
    statement = vote_statement(proposal_id, voter, approve, now)
    return {
        "op": op,
        "proposal_id": proposal_id,
        "voter": voter,
        "approve": approve,
        "signature": sign_statement(signing_key, statement),
        "now": now,
    }


def make_proposal_command(
    proposal_id: str,
    message_type: str,
    payload: Any,
    now: int,
    *,
    quorum_fraction: Any = None,
    ttl_ms: int | None = None,
    proposer: str | None = None,
    op: str = "proposals.create",
) -> dict[str, Any]:
    """Build a ``proposals.create`` command (defaults: quorum 2/3, 30 s to live)."""
    cmd: dict[str, Any] = {
        "op": op,
        "proposal_id": proposal_id,
        "message_type": message_type,
        "payload": payload,
        "now": now,
    }
    if quorum_fraction is not None:
        cmd["quorum_fraction"] = quorum_fraction
    if ttl_ms is not None:
        cmd["ttl_ms"] = ttl_ms
    if proposer is not None:
        cmd["proposer"] = proposer
    return cmd
