"""Deliberately broken Raft cores: the sweep must catch each of them.

They live in tests only; the library's core has no switches for being wrong.
"""

from __future__ import annotations

from ruflo_consensus.core.base import CoreFactory, Role, Snapshot
from ruflo_consensus.core.raft import RaftCore, RaftCoreFactory


def factory(cls: type[RaftCore]) -> CoreFactory:
    """A core factory (for the simulator or the runtime) that builds ``cls``."""
    return RaftCoreFactory(cls)


class CommitWithoutMajority(RaftCore):
    """A leader that commits everything it has as soon as one follower acknowledges.

    It overrides the one commit path's quorum count (whatever it holds counts as held by
    a majority) and, as a write of its hard state, makes each such commit index durable
    before its next messages leave.
    """

    def _committable_index(self) -> int:
        return self.last_index  # its own log, as if every follower held it too

    def _maybe_commit(self) -> bool:
        advanced = super()._maybe_commit()
        if advanced:
            self._hs_dirty = True
        return advanced


class SkipLogMatching(RaftCore):
    """A follower that appends whatever it is sent, without the log-matching check."""

    def _log_matches(self, prev_index: int, prev_term: int) -> bool:
        return prev_index <= self.last_index


class LeaseIgnoresDrift(RaftCore):
    """A leader whose lease is the full election timeout, as if clocks never drifted."""

    def lease_valid(self) -> bool:
        if self.role is not Role.LEADER:
            return False
        confirmed = self._quorum_round()
        return self._read_only.lease_holds(confirmed, self.ticks, self.config.election_ticks)


class SnapshotSkipsEntries(RaftCore):
    """Labels each snapshot it takes a few entries past the state it holds.

    A follower that installs it, or the node itself after a restart, never applies the
    entries in between: their effects are lost from its state machine.
    """

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        return super().compact(min(self.applied, index + 3), data)


commit_without_majority = factory(CommitWithoutMajority)
skip_log_matching = factory(SkipLogMatching)
lease_ignores_drift = factory(LeaseIgnoresDrift)
snapshot_skips_entries = factory(SnapshotSkipsEntries)


class TwoConfChangesAtOnce(RaftCore):
    """A leader that appends a membership change while another is still uncommitted."""

    def _conf_change_pending(self) -> bool:
        return False


two_conf_changes_at_once = factory(TwoConfChangesAtOnce)
