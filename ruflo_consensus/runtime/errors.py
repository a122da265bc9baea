"""The errors a node's API raises (:class:`~.node.Node`, the client server, membership).

They live apart from :mod:`.node` so that the modules serving the node's protocols can
raise and catch them without importing the node.
"""

from __future__ import annotations

from ..core.base import NodeId

__all__ = [
    "CapabilityMissing",
    "NodeError",
    "NotLeaderError",
    "NotMemberError",
    "SubmitTimeout",
]


class NodeError(Exception):
    """Base of the errors the node's client API raises."""


class SubmitTimeout(NodeError, TimeoutError):
    """No answer in time; the command may or may not have been applied (retry is safe)."""


class NotLeaderError(NodeError):
    """This node cannot order the command and was asked not to forward it."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader})")
        self.leader = leader


class NotMemberError(NodeError):
    """This node is not in the cluster's configuration (a spare not added yet, or a node
    whose removal it has seen): it cannot serve clients; ask another node."""


class CapabilityMissing(NodeError):
    """The running core does not offer what was asked (e.g. leadership transfer on a core
    without :class:`~ruflo_consensus.core.base.LeadershipTransfer`); nothing changed.

    ``backend`` is the core's class name, ``capability`` what it lacks, in words.
    """

    def __init__(self, backend: str, capability: str) -> None:
        super().__init__(f"the {backend} backend has no {capability}")
        self.backend = backend
        self.capability = capability
