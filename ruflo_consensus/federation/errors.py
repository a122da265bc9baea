"""Typed rejections of the federation machines.

Every class is a :class:`~ruflo_consensus.statemachine.CommandError` with a fixed ``code``;
raising one from ``apply`` means the command was refused and the state is unchanged.
Messages never contain a remaining budget.
"""

from __future__ import annotations

from typing import ClassVar

from ruflo_consensus.statemachine import CommandError

__all__ = [
    "BadArgument",
    "BadCommand",
    "BadSignature",
    "BadSnapshot",
    "BudgetExceeded",
    "DelegationExists",
    "FederationError",
    "HopLimitExceeded",
    "InvalidBudget",
    "InvalidTransition",
    "NoEligibleVoters",
    "NoSession",
    "NotAuthorized",
    "NotEligible",
    "PeerEvicted",
    "PeerExists",
    "PeerSuspended",
    "ProposalClosed",
    "ProposalExists",
    "ProposalExpired",
    "Replayed",
    "StaleTimestamp",
    "TooLarge",
    "UnknownApprover",
    "UnknownDelegation",
    "UnknownOp",
    "UnknownPeer",
    "UnknownProposal",
]


class FederationError(CommandError):
    """Base of all federation rejections; subclasses fix ``code``."""

    code_value: ClassVar[str] = "FEDERATION_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(self.code_value, message)


class BadCommand(FederationError):
    """The command is not a map with a string ``op``."""

    code_value = "BAD_COMMAND"


class UnknownOp(FederationError):
    """The machine has no such operation."""

    code_value = "UNKNOWN_OP"


class BadArgument(FederationError):
    """A field is missing, of the wrong type, out of range, or not allowed."""

    code_value = "BAD_ARGUMENT"


class TooLarge(FederationError):
    """A payload exceeds a size limit (messages are at most 1 MiB)."""

    code_value = "TOO_LARGE"


class InvalidBudget(FederationError):
    """A delegation budget is NaN, infinite, negative, non-integer or above its ceiling."""

    code_value = "INVALID_BUDGET"


class HopLimitExceeded(FederationError):
    """The next hop would exceed the delegation's ``max_hops``."""

    code_value = "HOP_LIMIT_EXCEEDED"


class BudgetExceeded(FederationError):
    """The hop's tokens or USD would take the delegation's remaining budget below zero."""

    code_value = "BUDGET_EXCEEDED"


class UnknownDelegation(FederationError):
    """No open delegation has this id."""

    code_value = "UNKNOWN_DELEGATION"


class DelegationExists(FederationError):
    """A delegation with this id is already open."""

    code_value = "DELEGATION_EXISTS"


class PeerSuspended(FederationError):
    """The peer's circuit breaker is SUSPENDED."""

    code_value = "PEER_SUSPENDED"


class PeerEvicted(FederationError):
    """The peer is EVICTED."""

    code_value = "PEER_EVICTED"


class UnknownPeer(FederationError):
    """No peer has this node id."""

    code_value = "UNKNOWN_PEER"


class PeerExists(FederationError):
    """A peer with this node id (or public key) is already registered."""

    code_value = "PEER_EXISTS"


class BadSignature(FederationError):
    """A signature or key is malformed, or the signature does not verify."""

    code_value = "BAD_SIGNATURE"


class NotEligible(FederationError):
    """The peer's trust level or standing does not allow this (e.g. voting below ATTESTED)."""

    code_value = "NOT_ELIGIBLE"


class NotAuthorized(FederationError):
    """The peer's trust level does not unlock the capability the command needs."""

    code_value = "NOT_AUTHORIZED"


class InvalidTransition(FederationError):
    """The requested state change is not one of the allowed moves (or not yet allowed)."""

    code_value = "INVALID_TRANSITION"


class NoSession(FederationError):
    """The peer has no live session (never opened, ended, expired or overdue)."""

    code_value = "NO_SESSION"


class Replayed(FederationError):
    """A signed statement is not newer than the one already recorded, or a nonce was seen."""

    code_value = "REPLAYED"


class StaleTimestamp(FederationError):
    """A signed timestamp is outside the window in which it is accepted."""

    code_value = "STALE_TIMESTAMP"


class UnknownApprover(FederationError):
    """No human approver has this id."""

    code_value = "UNKNOWN_APPROVER"


class UnknownProposal(FederationError):
    """No proposal has this id."""

    code_value = "UNKNOWN_PROPOSAL"


class ProposalExists(FederationError):
    """A proposal with this id already exists (ids are never reused)."""

    code_value = "PROPOSAL_EXISTS"


class ProposalClosed(FederationError):
    """The proposal is already approved or rejected."""

    code_value = "PROPOSAL_CLOSED"


class ProposalExpired(FederationError):
    """The proposal's expiry time has passed."""

    code_value = "PROPOSAL_EXPIRED"


class NoEligibleVoters(FederationError):
    """A proposal cannot be created when no peer is eligible to vote."""

    code_value = "NO_ELIGIBLE_VOTERS"


class BadSnapshot(FederationError):
    """``restore`` was given bytes that are not a snapshot of this machine."""

    code_value = "BAD_SNAPSHOT"
