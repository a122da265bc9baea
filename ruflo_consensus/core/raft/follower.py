"""The follower's step function: take the leader's log, or its snapshot, and its commits.

``AppendEntries`` passes the log-matching check (``_log_matches``) or is rejected with a
hint of where the logs diverge, so that the leader skips a whole term per round trip.
Entries already held are kept, a conflicting suffix is cut (rolling back any
configuration it held), and the commit index follows the leader's as far as the log is
known to match. A snapshot arrives in ``InstallSnapshot`` chunks (checked by
:mod:`.snapshot`) and, once complete, replaces the log it covers.
"""

from __future__ import annotations

from ..base import Message, NodeId, ReadState, Snapshot
from .membership import ConfigHistory, Configuration
from .messages import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
)
from .snapshot import IncomingSnapshot
from .state import RaftState

__all__ = ["FollowerRole"]


class FollowerRole(RaftState):
    """What a Raft node does while it follows (a part of :class:`~.core.RaftCore`)."""

    def _step_follower(self, m: Message) -> None:
        """Handle a message of the current term as follower (votes are handled before)."""
        if isinstance(m, AppendEntries):
            self._follow(m.src)
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self._follow(m.src)
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            if m.src == self._leader and self._may_campaign():
                self._campaign(pre_vote=False, transfer=True)
        elif isinstance(m, ReadIndexRequest):
            self._refuse_read(m)
        elif isinstance(m, ReadIndexResponse):
            ctx = self._read_only.answered(m.ctx)
            if ctx is not None:
                self._reads.append(ReadState(ctx, m.index))

    def _follow(self, leader: NodeId) -> None:
        """``leader`` sent us its log in our term: it is the leader, and it is alive."""
        if self._leader != leader:
            self._become_follower(self._term, leader)
        self.election_elapsed = 0

    # ----------------------------------------------------------------- entries

    def _log_matches(self, prev_index: int, prev_term: int) -> bool:
        """The log-matching check: do we hold an entry at ``prev_index`` with ``prev_term``?"""
        return self.term_at(prev_index) == prev_term

    def _handle_append(self, m: AppendEntries) -> None:
        """Check log matching for the leader's append; write the entries and answer."""
        if m.prev_index < self.commit:
            # Everything up to our commit index is already known to match.
            skip = self.commit - m.prev_index
            if skip >= len(m.entries):
                self._send(
                    AppendResponse(
                        self.node_id, m.src, self._term, True, self.commit, 0, 0, m.round
                    )
                )
                return
            m = AppendEntries(
                m.src,
                m.dst,
                m.term,
                self.commit,
                self.term_at(self.commit),
                m.entries[skip:],
                m.commit,
                m.round,
            )
        if not self._log_matches(m.prev_index, m.prev_term):
            self._count("log-mismatch")
            hint_index, hint_term = self._log.conflict_hint(m.prev_index, self.commit)
            self._send(
                AppendResponse(
                    self.node_id,
                    m.src,
                    self._term,
                    False,
                    m.prev_index,
                    hint_index,
                    hint_term,
                    m.round,
                )
            )
            return
        self._append_from_leader(m)
        last_new = m.prev_index + len(m.entries)
        new_commit = min(m.commit, last_new)
        if new_commit > self.commit:
            self.commit = new_commit
            self._commit_dirty = True
        self._send(AppendResponse(self.node_id, m.src, self._term, True, last_new, 0, 0, m.round))

    def _append_from_leader(self, m: AppendEntries) -> None:
        """Write the leader's entries after ``m.prev_index`` (which matches and is at or
        after our commit index, so at or after the snapshot point); a configuration among
        the new entries, or one in a cut suffix, changes the configuration in effect."""
        old_last = self.last_index
        first = self._log.append_after(m.prev_index, m.entries)
        if first is None:
            return
        rolled_back = first <= old_last and self._history.truncate_from(first)
        if self._history.scan(m.entries[first - m.prev_index - 1 :]) or rolled_back:
            self._on_log_configuration_changed()

    # ----------------------------------------------------------------- snapshots

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        """Take one chunk (checked by ``_validate``); install the snapshot once complete."""
        if m.index <= self.commit:
            # Already have it all (a retransmission, or we caught up another way).
            if self._incoming is not None and self._incoming.first.index <= self.commit:
                self._incoming = None
            self._send(InstallSnapshotResponse(self.node_id, m.src, self._term, m.index, 0, True))
            return
        inc = self._incoming
        if m.offset == 0 and not (
            inc is not None and inc.same_snapshot(m) and len(inc.buf) >= len(m.data)
        ):
            inc = self._incoming = IncomingSnapshot(m, bytearray(m.data))
        else:
            assert inc is not None  # _validate made sure
            if m.offset == len(inc.buf):
                inc.buf += m.data
        head = inc.first
        if len(inc.buf) < head.total:
            self._send(
                InstallSnapshotResponse(
                    self.node_id, m.src, self._term, m.index, len(inc.buf), False
                )
            )
            return
        self._incoming = None
        snap = Snapshot(head.index, head.snap_term, head.voters, head.learners, bytes(inc.buf))
        self._install(snap)
        self._send(
            InstallSnapshotResponse(self.node_id, m.src, self._term, snap.index, head.total, True)
        )

    def _install(self, snap: Snapshot) -> None:
        """Replace the log through ``snap.index`` (and the state machine) by the snapshot.

        Entries after it are kept when the log holds the snapshot's last entry (same index
        and term); otherwise the whole log goes. The next ``Ready`` asks the driver to
        store the snapshot (and truncate after it) and to restore its machine from it.
        """
        conf = Configuration(snap.voters, snap.learners)
        if self.term_at(snap.index) == snap.term:
            self._compact_log_to(snap.index, snap.term)
            self._history.compact_to(snap.index, conf)
        else:
            self._log.reset_to(snap.index, snap.term)
            self._trigger.restart(snap.index)
            self._history = ConfigHistory(conf)
        self._learn_nodes(conf.members)
        if conf.is_member(self.node_id):
            self._joining = False  # the snapshot's configuration names us
        self._set_configuration()
        self.snapshot = snap
        self._snapshot_to_save = snap
        self._snapshot_to_restore = snap
        self.commit = snap.index
        self.applied = snap.index
        self._hs_dirty = True
