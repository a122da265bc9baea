"""Sans-IO protocol cores and the contract they share (:mod:`.base`)."""

from .base import (
    CommandResult,
    Committed,
    ConsensusCore,
    ConsensusError,
    Entry,
    HardState,
    Message,
    NodeId,
    NotLeader,
    Persist,
    Proposal,
    ProposalDropped,
    ProtocolError,
    Ready,
    Role,
    RoleChange,
)
from .raft import RaftConfig, RaftCore

__all__ = [
    "CommandResult",
    "Committed",
    "ConsensusCore",
    "ConsensusError",
    "Entry",
    "HardState",
    "Message",
    "NodeId",
    "NotLeader",
    "Persist",
    "Proposal",
    "ProposalDropped",
    "ProtocolError",
    "RaftConfig",
    "RaftCore",
    "Ready",
    "Role",
    "RoleChange",
]
