"""Sans-IO protocol cores and the contract they share (:mod:`.base`).

The CRDT names (``CrdtCore``, ``CrdtUpdate``, …) load :mod:`.crdt`, and with it pycrdt,
only when first used: a Raft node or a ``kv`` command does not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    CommandResult,
    Committed,
    ConfChange,
    ConfChangeKind,
    ConfChangeRefused,
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
    Snapshot,
)
from .raft import RaftConfig, RaftCore
from .raft.membership import Configuration

if TYPE_CHECKING:
    from .crdt import CRDT_MESSAGES, CrdtConfig, CrdtCore, CrdtUpdate, SyncReply, SyncRequest

_CRDT_NAMES = frozenset(
    {"CRDT_MESSAGES", "CrdtConfig", "CrdtCore", "CrdtUpdate", "SyncReply", "SyncRequest"}
)


def __getattr__(name: str) -> Any:
    """Load the CRDT core (and pycrdt) on first use of one of its names."""
    if name in _CRDT_NAMES:
        from . import crdt

        return getattr(crdt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CRDT_MESSAGES",
    "CommandResult",
    "Committed",
    "ConfChange",
    "ConfChangeKind",
    "ConfChangeRefused",
    "Configuration",
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
    "Snapshot",
    "SyncReply",
    "SyncRequest",
]
