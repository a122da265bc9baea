"""Deliberately broken Raft cores: the sweep must catch each of them.

They live in tests only; the library's core has no switches for being wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ruflo_consensus.core.base import Entry, HardState, NodeId, Snapshot
from ruflo_consensus.core.raft import RaftConfig, RaftCore


class CommitWithoutMajority(RaftCore):
    """A leader that commits everything it has as soon as one follower acknowledges."""

    def _advance_commit(self) -> bool:
        if self.last_index > self.commit and self.term_at(self.last_index) == self.term:
            self.commit = self.last_index
            self._hs_dirty = True
            return True
        return False


class SkipLogMatching(RaftCore):
    """A follower that appends whatever it is sent, without the log-matching check."""

    def _log_matches(self, prev_index: int, prev_term: int) -> bool:
        return prev_index <= self.last_index


def commit_without_majority(
    node_id: NodeId,
    peers: Sequence[NodeId],
    rng: random.Random,
    config: RaftConfig,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    *,
    snapshot: Snapshot | None = None,
) -> RaftCore:
    """Factory for :class:`CommitWithoutMajority`."""
    return CommitWithoutMajority(
        node_id, peers, rng, config, hard_state, entries, snapshot=snapshot
    )


def skip_log_matching(
    node_id: NodeId,
    peers: Sequence[NodeId],
    rng: random.Random,
    config: RaftConfig,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    *,
    snapshot: Snapshot | None = None,
) -> RaftCore:
    """Factory for :class:`SkipLogMatching`."""
    return SkipLogMatching(node_id, peers, rng, config, hard_state, entries, snapshot=snapshot)


class LeaseIgnoresDrift(RaftCore):
    """A leader whose lease is the full election timeout, as if clocks never drifted."""

    def lease_valid(self) -> bool:
        if self.role.value != "leader":
            return False
        sent = self._round_tick.get(self._quorum_round())
        return sent is not None and self.ticks < sent + self.config.election_ticks


def lease_ignores_drift(
    node_id: NodeId,
    peers: Sequence[NodeId],
    rng: random.Random,
    config: RaftConfig,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    *,
    snapshot: Snapshot | None = None,
) -> RaftCore:
    """Factory for :class:`LeaseIgnoresDrift`."""
    return LeaseIgnoresDrift(node_id, peers, rng, config, hard_state, entries, snapshot=snapshot)


class TwoConfChangesAtOnce(RaftCore):
    """A leader that appends a membership change while another is still uncommitted."""

    def _conf_change_pending(self) -> bool:
        return False


def factory_of(cls: type[RaftCore]) -> Callable[..., RaftCore]:
    """A core factory (the simulator's ``CoreFactory`` shape) that builds ``cls``."""

    def factory(
        node_id: NodeId,
        peers: Sequence[NodeId],
        rng: random.Random,
        config: RaftConfig,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        *,
        snapshot: Snapshot | None = None,
    ) -> RaftCore:
        return cls(node_id, peers, rng, config, hard_state, entries, snapshot=snapshot)

    factory.__doc__ = f"Factory for :class:`{cls.__name__}`."
    return factory


two_conf_changes_at_once = factory_of(TwoConfChangesAtOnce)
