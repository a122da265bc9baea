"""The leader's step function and what a leader does: replicate, commit, confirm reads.

- replication: one :class:`~.progress.Progress` per other member; appends are probed
  or pipelined (``_send_append``), a follower whose next entry was compacted gets the
  snapshot in chunks, and every heartbeat interval a numbered round of heartbeats goes
  out (``_broadcast_heartbeat``) — which also re-probes a stalled pipeline;
- the one commit path (``_maybe_commit``): the highest index a majority of the voters
  holds commits once it is of the current term; then waiting reads are replayed, the
  followers learn the new commit index, and a leader whose own removal just committed
  steps down;
- reads (``_leader_read``): at the commit index, confirmed by a heartbeat round or a
  lease (:mod:`.read_only`);
- check-quorum in the leader's tick, and the rules for admitting a membership change.
"""

from __future__ import annotations

from typing import Any

from ..base import (
    ConfChange,
    ConfChangeKind,
    ConfChangeRefused,
    Entry,
    Message,
    NodeId,
    Role,
)
from .membership import apply_change
from .messages import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    TimeoutNow,
)
from .progress import Progress, ProgressState, quorum_value
from .snapshot import chunk_message
from .state import RaftState

__all__ = ["LeaderRole"]


class LeaderRole(RaftState):
    """What a Raft node does while it leads (a part of :class:`~.core.RaftCore`)."""

    def _become_leader(self) -> None:
        """Take the lead: track every other member, append a no-op of the new term."""
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        last = self.last_index
        self.progress = {p: Progress(match=0, next=last + 1) for p in self.others}
        self._read_only.forget_rounds()
        self._set_role(Role.LEADER, self.node_id)
        # A no-op entry of the new term lets the leader commit entries of earlier terms.
        self._log.append(Entry(self._term, last + 1, None))
        if not self._other_voters:
            self._maybe_commit()
        for peer in self.others:
            self._send_append(peer, allow_empty=True)

    def _tick_leader(self) -> None:
        """One tick as leader: abandon a stalled transfer, check quorum, heartbeat."""
        self.heartbeat_elapsed += 1
        if self.transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks:
                self.transfer_target = None  # the target never took over: carry on
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self._term, None)
                return
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _step_leader(self, m: Message) -> None:
        """Handle a message of the current term as leader (votes are handled before)."""
        if isinstance(m, AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, InstallSnapshotResponse):
            self._handle_snapshot_response(m)
        elif isinstance(m, ReadIndexRequest):
            self._leader_read(None, m.src, m.ctx)
        elif isinstance(m, AppendEntries | InstallSnapshot):
            # Two leaders in one term cannot happen; refuse to touch the log if it does.
            self._count("leader-conflict")

    # ----------------------------------------------------------------- answers

    def _progress_of(self, peer: NodeId) -> Progress | None:
        """The progress record of ``peer`` (None, counted, once it left)."""
        pr = self.progress.get(peer)
        if pr is None:
            self._count("non-member-response")
        return pr

    def _handle_append_response(self, m: AppendResponse) -> None:
        """Note an answer to an append or heartbeat: advance, pipeline, or back off."""
        pr = self._progress_of(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            if self._read_only.pending:
                self._release_reads()
        if pr.state is ProgressState.SNAPSHOT:
            if m.success:
                self._acknowledged(m.src, pr, m.index)
            return
        if m.success:
            if self._acknowledged(m.src, pr, m.index):
                return
            # A reply that acknowledges nothing new (a heartbeat's or a duplicate).
            if pr.state is ProgressState.PROBE:
                pr.probe_sent = False
            elif pr.paused(self.config.max_inflight, self.config.max_inflight_bytes):
                pr.free_one()  # let one more append out
            if pr.match < self.last_index:
                self._send_append(m.src, allow_empty=False)
            return
        # rejection: back off
        if m.round and m.index <= pr.match:
            # A heartbeat names only an index the follower acknowledged to this leader,
            # in this term, before the heartbeat left: rejecting it means the follower
            # lost those entries (it restarted without its storage). Forget what it was
            # known to hold and probe from its hint; log matching repairs it.
            self._count("follower-lost-log")
            pr.match = 0
            pr.become_probe()
            hint = self._log.next_after_rejection(m.index, m.hint_index, m.hint_term)
            pr.next = max(1, min(hint, m.index))
            self._send_append(m.src, allow_empty=True)
            return
        if pr.state is ProgressState.REPLICATE:
            if m.index <= pr.match:
                return  # stale: an append's answer that a later success overtook
            pr.become_probe()
        elif m.index != pr.next - 1:
            return  # stale probe answer
        hint = self._log.next_after_rejection(m.index, m.hint_index, m.hint_term)
        pr.next = max(pr.match + 1, min(hint, m.index))
        pr.probe_sent = False
        self._send_append(m.src, allow_empty=True)

    def _handle_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        """A follower acknowledged snapshot bytes: send the next chunk, or resume appends."""
        pr = self._progress_of(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.done:
            self._acknowledged(m.src, pr, m.index)
            return
        if (
            pr.state is ProgressState.SNAPSHOT
            and pr.snapshot is not None
            and m.index == pr.snapshot.index
            and pr.snap_offset < m.received <= len(pr.snapshot.data)
        ):
            pr.snap_offset = m.received
            self._send_chunk(m.src, pr)

    def _acknowledged(self, peer: NodeId, pr: Progress, index: int) -> bool:
        """``peer`` durably holds our log through ``index``; False if that is nothing new."""
        if index <= pr.match:
            return False
        pr.match = index
        if pr.next <= index:
            pr.next = index + 1
        if pr.state is ProgressState.SNAPSHOT:
            if index < self._log.offset:
                # still behind what the log holds; if it got all of the snapshot we were
                # sending (we compacted again meanwhile), send the latest one now
                if pr.snapshot is None or pr.snapshot.index <= index:
                    self._start_snapshot(peer, pr)
                return True
            pr.become_replicate()
        elif pr.state is ProgressState.PROBE:
            pr.become_replicate()
        else:
            pr.free_to(index)
        if self._maybe_commit():
            return True  # every follower was just sent the new commit index
        if pr.match < self.last_index:
            self._send_append(peer, allow_empty=False)
        return True

    # ----------------------------------------------------------------- commit

    def _committable_index(self) -> int:
        """The highest index a majority of the voters holds.

        A leader that is not a voter (it is removing itself) does not count its own log.
        """
        progress = self.progress
        matches = [progress[v].match for v in self._other_voters]
        if self._self_voter:
            matches.append(self.last_index)
        return quorum_value(matches, self.quorum)

    def _maybe_commit(self) -> bool:
        """The leader's one commit path; True when the commit index moved.

        The index a majority holds commits if it is of the current term (Raft §5.4.2:
        an earlier term's entry commits only by way of a later one). Then reads that
        waited for an entry of this term are given their point, every follower is told
        the new commit index, and a leader whose own removal just committed steps down.
        """
        index = self._committable_index()
        if index <= self.commit or self.term_at(index) != self._term:
            return False
        self.commit = index
        self._commit_dirty = True
        for read in self._read_only.take_waiting():
            self._leader_read(read.ctx, read.origin, read.rid)
        for other in self.others:
            self._send_append(other, allow_empty=True)
        self._leave_if_removed()
        return True

    def _leave_if_removed(self) -> None:
        """This leader's own removal is committed: hand over to a caught-up voter, step down.

        It told the followers about the commit just before; a voter holding the whole
        log gets ``TimeoutNow`` so the cluster need not wait an election timeout.
        """
        if self._self_voter or self._role is not Role.LEADER or self._conf_change_pending():
            return
        last = self.last_index
        caught_up = [v for v in self._other_voters if self.progress[v].match >= last]
        if caught_up:
            self._send(TimeoutNow(self.node_id, caught_up[0], self._term))
        self._become_follower(self._term, None)

    # ----------------------------------------------------------------- replication

    def _send_append(self, peer: NodeId, allow_empty: bool) -> None:
        """Send ``peer`` the next batch of entries, unless its pipeline or probe is full."""
        pr = self.progress[peer]
        cfg = self.config
        if pr.paused(cfg.max_inflight, cfg.max_inflight_bytes):
            return
        if pr.next <= self._log.offset:
            self._start_snapshot(peer, pr)  # the entries it needs next are compacted away
            return
        prev = pr.next - 1
        batch, size = self._log.batch(pr.next, cfg.max_batch_entries, cfg.max_batch_bytes)
        entries = tuple(batch)
        if not entries and not allow_empty:
            return
        self._send(
            AppendEntries(
                self.node_id, peer, self._term, prev, self.term_at(prev), entries, self.commit
            )
        )
        if pr.state is ProgressState.REPLICATE:
            if entries:
                last = entries[-1].index
                pr.next = last + 1
                pr.add_inflight(last, size)
        else:
            pr.probe_sent = True

    def _broadcast_heartbeat(self) -> None:
        """Start a heartbeat round: each member gets a numbered heartbeat (or a re-probe)."""
        round_ = self._read_only.start_round(self.ticks)
        last = self.last_index
        for peer in self.others:
            pr = self.progress[peer]
            stalled = pr.match < last and pr.match == pr.match_at_heartbeat
            pr.match_at_heartbeat = pr.match
            if stalled and pr.state is ProgressState.REPLICATE:
                # Nothing was acknowledged for a whole heartbeat interval: the optimistic
                # appends were probably lost. Probe again from the last known match.
                pr.become_probe()
                self._send_append(peer, allow_empty=True)
                continue
            if pr.state is ProgressState.SNAPSHOT:
                assert self.snapshot is not None, "a transfer sends this node's snapshot"
                if pr.snapshot_heartbeat(self.snapshot):
                    self._send_chunk(peer, pr)
            # the match point, or index 0 (which always matches) when it is compacted away
            prev = pr.match if pr.match >= self._log.offset else 0
            self._send(
                AppendEntries(
                    self.node_id,
                    peer,
                    self._term,
                    prev,
                    self.term_at(prev),
                    (),
                    min(self.commit, pr.match),
                    round_,
                )
            )

    def _start_snapshot(self, peer: NodeId, pr: Progress) -> None:
        """Start sending ``peer`` this node's latest snapshot, from its first byte."""
        assert self.snapshot is not None, "a compacted log always has a snapshot"
        pr.become_snapshot(self.snapshot)
        self._send_chunk(peer, pr)

    def _send_chunk(self, peer: NodeId, pr: Progress) -> None:
        """Send ``peer`` the snapshot chunk at the offset it acknowledged."""
        snap = pr.snapshot
        assert snap is not None
        self._send(
            chunk_message(
                self.node_id,
                peer,
                self._term,
                snap,
                pr.snap_offset,
                self.config.snapshot_chunk_bytes,
            )
        )

    def _quorum_active(self) -> bool:
        """Did a majority of the voters (this node if it votes) answer since last asked?"""
        progress = self.progress
        active = int(self._self_voter)
        active += sum(1 for v in self._other_voters if progress[v].recent_active)
        for p in progress.values():
            p.recent_active = False
        return active >= self.quorum

    # ----------------------------------------------------------------- reads

    def _leader_read(self, ctx: Any, origin: NodeId | None, rid: int) -> None:
        """A read asked here (``origin`` None) or by a follower: find and confirm its point."""
        if self.term_at(self.commit) != self._term:
            # Until an entry of this term commits, the commit index may be stale.
            self._read_only.wait_for_commit(ctx, origin, rid)
            return
        index = self.commit
        alone = not self._other_voters and self._self_voter
        if alone or (self.config.read_mode == "lease" and self.lease_valid()):
            self._deliver_read(ctx, origin, rid, index)
            return
        self._read_only.wait_for_round(ctx, index, origin, rid)

    def lease_valid(self) -> bool:
        """True while a majority's heartbeat acknowledgement keeps this leader's lease."""
        if self._role is not Role.LEADER or not self.config.check_quorum:
            return False
        return self._read_only.lease_holds(
            self._quorum_round(), self.ticks, self.config.lease_ticks
        )

    def _quorum_round(self) -> int:
        """The latest heartbeat round a majority of the voters has acknowledged."""
        progress = self.progress
        rounds = [progress[v].acked_round for v in self._other_voters]
        if self._self_voter:
            rounds.append(self._read_only.round)
        return quorum_value(rounds, self.quorum)

    def _release_reads(self) -> None:
        """Serve the reads whose heartbeat round a majority has now answered."""
        for read in self._read_only.confirm(self._quorum_round()):
            self._deliver_read(read.ctx, read.origin, read.rid, read.index)

    # ----------------------------------------------------------------- membership

    def _check_conf_change(self, kind: ConfChangeKind | str, node: NodeId) -> ConfChange:
        """The change entry for ``kind`` of ``node``, or :class:`ConfChangeRefused`."""
        if self._role is not Role.LEADER:
            raise ConfChangeRefused(
                "not-leader", f"{self.node_id} is not the leader", leader=self._leader
            )
        change = apply_change(self._conf, kind, node)
        if self.transfer_target is not None:
            raise ConfChangeRefused(
                "transfer-in-progress", f"leadership is moving to {self.transfer_target}"
            )
        if self._conf_change_pending():
            raise ConfChangeRefused(
                "change-in-progress",
                f"the change at index {self._history.current_index} is not committed yet "
                f"(commit {self.commit})",
            )
        if self.term_at(self.commit) != self._term:
            raise ConfChangeRefused(
                "term-not-committed",
                f"no entry of term {self._term} is committed yet (commit {self.commit})",
            )
        if self.last_index - self.commit >= self.config.max_uncommitted_entries:
            raise ConfChangeRefused(
                "too-many-uncommitted",
                f"{self.config.max_uncommitted_entries} entries are already waiting to commit",
            )
        if change.kind is ConfChangeKind.ADD_VOTER:
            # A voter that joins with an empty log counts toward every quorum at once, and a
            # joining node votes only once the cluster's log names it: if the leader is lost
            # before the new voter gets that entry, no quorum can ever form again. A new
            # node therefore comes in as a learner and is promoted once it has caught up.
            raise ConfChangeRefused(
                "learner-first",
                f"add {change.node} as a learner (add-learner), then promote it once it has "
                "caught up (promote-learner)",
            )
        if change.kind is ConfChangeKind.PROMOTE_LEARNER:
            pr = self.progress.get(change.node)
            match = pr.match if pr is not None else 0
            lag = self.last_index - match
            # it must hold the configuration entry that names it, or it would refuse votes
            # as a joining node while counting toward every quorum (see learner-first)
            named = self._history.current_index or self.snapshot_index
            if lag > self.config.max_learner_lag or match < named:
                raise ConfChangeRefused(
                    "learner-behind",
                    f"{change.node} has {match} of {self.last_index} entries; it needs entry "
                    f"{named}, which names it "
                    f"(max_learner_lag={self.config.max_learner_lag})",
                )
        return change
