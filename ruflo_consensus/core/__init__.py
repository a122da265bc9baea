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
from .crdt import CRDT_MESSAGES, CrdtConfig, CrdtCore, CrdtUpdate, SyncReply, SyncRequest
from .raft import RaftConfig, RaftCore

__all__ = [
    "CRDT_MESSAGES",
    "CommandResult",
    "Committed",
    "ConsensusCore",
    "ConsensusError",
    "CrdtConfig",
    "CrdtCore",
    "CrdtUpdate",
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
    "SyncReply",
    "SyncRequest",
]
