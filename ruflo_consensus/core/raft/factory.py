"""The one way both drivers build a Raft core from what storage returned."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..base import Entry, HardState, NodeId, Snapshot
from .config import RaftConfig
from .core import RaftCore

__all__ = ["RaftCoreFactory"]


class RaftCoreFactory:
    """A :class:`~ruflo_consensus.core.base.CoreFactory` that builds ``core_class``.

    The simulator and the runtime both default to ``RaftCoreFactory()``; a test passes
    ``RaftCoreFactory(SomeBrokenCore)`` to run a deliberately broken subclass under either
    driver. The factory is a plain picklable object (sweeps hand it to worker processes).
    Raises ``ValueError`` when the stored state cannot be loaded (a gap in the log, a
    snapshot of another membership); drivers turn that into their own typed error.
    """

    def __init__(self, core_class: type[RaftCore] = RaftCore) -> None:
        self.core_class = core_class

    def __call__(
        self,
        node_id: NodeId,
        voters: Sequence[NodeId],
        rng: random.Random,
        config: RaftConfig,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        *,
        snapshot: Snapshot | None = None,
        join: bool = False,
    ) -> RaftCore:
        """Build ``node_id``'s core from its hard state, log and snapshot."""
        return self.core_class(
            node_id, voters, rng, config, hard_state, entries, snapshot=snapshot, join=join
        )

    def __repr__(self) -> str:
        return f"RaftCoreFactory({self.core_class.__name__})"
