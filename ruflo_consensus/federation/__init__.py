"""Replicated state machines of a federation of AI-agent nodes.

Six machines, each a standalone :class:`~ruflo_consensus.statemachine.StateMachine`, and
:class:`FederationStateMachine`, which holds all six behind one log and enforces the rules
that span them:

* :class:`PeerRegistry` — signed manifests, sessions, eviction;
* :class:`TrustLedger` — score, ladder with hysteresis, instant drops, capability gates;
* :class:`BudgetLedger` — delegation budgets hop by hop, per-peer circuit breaker;
* :class:`QTable` / :class:`MergeableQTable` — the router's shared Q-table;
* :class:`AuditLog` — hash-chained audit records, retention, HIPAA stripping, export;
* :class:`ProposalBook` — proposals with signed votes, quorum, expiry.

Time enters only as ``now`` (int milliseconds) inside each command. See ``docs/federation.md``.
"""

from ruflo_consensus.canonical import canonical_bytes, canonical_loads
from ruflo_consensus.federation.audit import AuditLog, verify_chain
from ruflo_consensus.federation.budget import (
    BreakerPolicy,
    BreakerState,
    Budget,
    BudgetLedger,
    validate_budget,
)
from ruflo_consensus.federation.errors import (
    BadArgument,
    BadCommand,
    BadSignature,
    BadSnapshot,
    BudgetExceeded,
    DelegationExists,
    FederationError,
    HopLimitExceeded,
    InvalidBudget,
    InvalidTransition,
    NoEligibleVoters,
    NoSession,
    NotAuthorized,
    NotEligible,
    PeerEvicted,
    PeerExists,
    PeerSuspended,
    ProposalClosed,
    ProposalExists,
    ProposalExpired,
    Replayed,
    StaleTimestamp,
    TooLarge,
    UnknownApprover,
    UnknownDelegation,
    UnknownOp,
    UnknownPeer,
    UnknownProposal,
)
from ruflo_consensus.federation.machine import FederationStateMachine
from ruflo_consensus.federation.proposals import (
    MESSAGE_TYPES,
    ProposalBook,
    ProposalStatus,
    make_proposal_command,
    make_vote_command,
    quorum_size,
)
from ruflo_consensus.federation.qtable import (
    DEFAULT_AGENT_TYPES,
    MergeableQTable,
    QConfig,
    QTable,
    state_key,
    task_embedding,
)
from ruflo_consensus.federation.registry import (
    PeerRegistry,
    make_handshake_command,
    make_join_command,
    make_update_command,
)
from ruflo_consensus.federation.trust import (
    CAPABILITIES,
    TrustLedger,
    TrustLevel,
    TrustPolicy,
    make_add_approver_command,
    make_privileged_approval_command,
    trust_score,
)
from ruflo_consensus.federation.workload import (
    FederationWorkload,
    check_cross_replica,
    check_replica,
    replay,
)

__all__ = [
    "CAPABILITIES",
    "DEFAULT_AGENT_TYPES",
    "MESSAGE_TYPES",
    "AuditLog",
    "BadArgument",
    "BadCommand",
    "BadSignature",
    "BadSnapshot",
    "BreakerPolicy",
    "BreakerState",
    "Budget",
    "BudgetExceeded",
    "BudgetLedger",
    "DelegationExists",
    "FederationError",
    "FederationStateMachine",
    "FederationWorkload",
    "HopLimitExceeded",
    "InvalidBudget",
    "InvalidTransition",
    "MergeableQTable",
    "NoEligibleVoters",
    "NoSession",
    "NotAuthorized",
    "NotEligible",
    "PeerEvicted",
    "PeerExists",
    "PeerRegistry",
    "PeerSuspended",
    "ProposalBook",
    "ProposalClosed",
    "ProposalExists",
    "ProposalExpired",
    "ProposalStatus",
    "QConfig",
    "QTable",
    "Replayed",
    "StaleTimestamp",
    "TooLarge",
    "TrustLedger",
    "TrustLevel",
    "TrustPolicy",
    "UnknownApprover",
    "UnknownDelegation",
    "UnknownOp",
    "UnknownPeer",
    "UnknownProposal",
    "canonical_bytes",
    "canonical_loads",
    "check_cross_replica",
    "check_replica",
    "make_add_approver_command",
    "make_handshake_command",
    "make_join_command",
    "make_privileged_approval_command",
    "make_proposal_command",
    "make_update_command",
    "make_vote_command",
    "quorum_size",
    "replay",
    "state_key",
    "task_embedding",
    "trust_score",
    "validate_budget",
    "verify_chain",
]
