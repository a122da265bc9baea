"""The sans-IO Raft core: election with pre-vote and check-quorum, pipelined replication.

The core follows the Raft paper (Ongaro & Ousterhout) with the refinements of Ongaro's
thesis that production implementations use:

- **pre-vote** (§9.6): a node whose election timer fires first asks whether it *could* win
  at ``term + 1`` without changing its own term, so a partitioned node that rejoins does
  not force the healthy cluster into a new election;
- **check-quorum**: a leader that has not heard from a majority within an election timeout
  steps down, and a node that heard from a live leader within the minimum election
  timeout ignores vote requests (leader stickiness);
- **log matching** with conflict back-off: a follower rejects an ``AppendEntries`` whose
  ``(prev_index, prev_term)`` it does not hold and answers with the first index of its
  conflicting term, so the leader skips a whole term per round trip;
- **commit by counting replicas of current-term entries only** (§5.4.2);
- **batching and pipelining**: proposals accumulate between :meth:`RaftCore.ready` calls and
  go out together; up to ``max_inflight`` ``AppendEntries`` may be outstanding per follower;
- **snapshots and log compaction** (§7): the core asks the driver for a state machine
  snapshot when the applied log passes ``snapshot_entries`` entries or ``snapshot_bytes``
  bytes (:attr:`~ruflo_consensus.core.base.Ready.snapshot_request`), drops the log up to
  it on :meth:`RaftCore.compact`, and sends a follower whose next entry is gone an
  ``InstallSnapshot`` in chunks of ``snapshot_chunk_bytes``;
- **membership changes one server at a time** (thesis §4.1, with the rule added after
  the 2015 single-server bug): :meth:`RaftCore.propose_conf_change` adds or removes a
  voter or a learner; a configuration takes effect when its entry is appended and rolls
  back if it is truncated; a leader appends one only after committing an entry of its
  term and while no other change is uncommitted (see :mod:`.membership`).

Time is ``tick()`` calls (``RaftConfig.tick_ms`` each); randomness is an injected
``random.Random``; messages and storage writes leave through
:class:`~ruflo_consensus.core.base.Ready`.

This module holds the events in and the effects out; :meth:`RaftCore.step` checks a
message, applies the term rules every role shares, and hands the rest to the step
function of the node's role (:mod:`.leader`, :mod:`.election`, :mod:`.follower`).
"""

from __future__ import annotations

from typing import Any

from ..base import (
    Committed,
    ConfChangeKind,
    ConfChangeRefused,
    Entry,
    Message,
    NodeId,
    NotLeader,
    Persist,
    Proposal,
    ProposalDropped,
    Ready,
    Role,
    Snapshot,
    TransferRefused,
)
from .election import ElectionRole
from .follower import FollowerRole
from .leader import LeaderRole
from .membership import Configuration, conf_entry_problem
from .messages import (
    RAFT_MESSAGES,
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)
from .snapshot import chunk_problem, continuation_problem

__all__ = ["RaftCore"]


class RaftCore(LeaderRole, ElectionRole, FollowerRole):
    """One Raft node's protocol state. See the module docstring for the protocol.

    ``voters`` lists the cluster's bootstrap voters, this node included: the
    configuration in effect before any configuration entry (every node of a cluster
    passes the same list, on every restart). The configuration in effect is the one of
    the latest configuration entry in the log, or the snapshot's, or else ``voters``.
    A node started fresh to join a running cluster passes ``join=True`` (it need not
    be in ``voters``): it starts with an empty log, never campaigns, and waits for the
    leader, which adds it as a learner (:meth:`propose_conf_change`) and sends it the
    log or a snapshot.

    On restart a node passes what storage returned: ``hard_state``, ``snapshot`` (the
    latest one, or None) and ``entries`` (the log after the snapshot — from
    ``snapshot.index + 1``, or from 1 without one — contiguous); a fresh node passes none
    of them. With a snapshot the first ``Ready`` carries it in
    :attr:`~ruflo_consensus.core.base.Ready.snapshot` so that the driver restores its
    state machine before applying the entries after it.

    ``self.log[0]`` is a sentinel standing for the snapshot point (index and term of the
    last compacted entry; ``(0, 0)`` without a snapshot); ``self.log[k]`` is the entry at
    index ``snapshot_index + k``.
    """

    # ----------------------------------------------------------------- events in

    def propose(self, proposal: Proposal) -> None:
        """Append a client command to the leader's log; raise :class:`NotLeader` elsewhere."""
        if self._role is not Role.LEADER:
            raise NotLeader(self.node_id, self._leader)
        if self.transfer_target is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.transfer_target}")
        if self.last_index - self.commit >= self.config.max_uncommitted_entries:
            raise ProposalDropped(
                f"{self.config.max_uncommitted_entries} entries are already waiting to commit"
            )
        self._log.append(Entry(self._term, self.last_index + 1, proposal))
        self._pending_broadcast = True
        if not self._other_voters:
            self._maybe_commit()  # no other voter to wait for: what we hold is committed

    def tick(self) -> None:
        """Advance the logical clock by one tick: elections, heartbeats, check-quorum."""
        self.election_elapsed += 1
        self.ticks += 1
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, m: Message) -> None:
        """Handle one message. Raises :class:`ProtocolError` (state unchanged) when invalid.

        The rules every role shares come first: who may ask for a vote at all, and what
        a message of a newer or an older term does. Vote requests are then answered the
        same way in every role; anything else goes to the role's step function.
        """
        self._validate(m)
        if isinstance(m, RequestVote):
            if not self._conf.is_member(m.src) and not m.transfer and self._hears_leader():
                # A removed server (or one we have not heard was added) asks for votes
                # while we have a live leader: it must not disrupt the cluster, nor move
                # our term (thesis §4.2.3). Without a live leader we answer on the merits
                # of its log: it may be a voter whose addition has not reached us, and the
                # cluster may need our vote for it (votes count only in the candidate's
                # configuration, so answering never costs safety).
                self._count("vote-from-non-member")
                return
            if self._joining:
                self._count("vote-while-joining")  # we may have forgotten a vote we gave
                return
        mterm: int = m.term  # type: ignore[attr-defined]
        if mterm > self._term:
            if (
                isinstance(m, RequestVote)
                and not m.transfer
                and self.config.check_quorum
                and self._leader_is_recent()  # we are in a live leader's lease
            ):
                self._count("vote-in-lease")
                return
            if (isinstance(m, RequestVote) and m.pre_vote) or (
                isinstance(m, VoteResponse) and m.pre_vote and m.granted
            ):
                pass  # a pre-vote never moves anyone's term
            else:
                leader = m.src if isinstance(m, AppendEntries | InstallSnapshot) else None
                self._become_follower(mterm, leader)
        elif mterm < self._term:
            if isinstance(m, AppendEntries | InstallSnapshot):
                # Tell a stale leader about the newer term so it steps down.
                self._send(AppendResponse(self.node_id, m.src, self._term, False, 0, 0, 0))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(VoteResponse(self.node_id, m.src, self._term, False, True))
            self._count("stale-term")
            return

        if isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif self._role is Role.LEADER:
            self._step_leader(m)
        elif self._role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _validate(self, m: Message) -> None:
        """Refuse (counted, state unchanged) a message this node must not act on."""
        if m.dst != self.node_id:
            self._reject("wrong-destination", f"message for {m.dst!r} reached {self.node_id!r}")
        if m.src == self.node_id or (
            m.src not in self._known
            and not isinstance(m, AppendEntries | InstallSnapshot | RequestVote)
        ):
            # A leader or candidate we have not heard of is fine: it may be a voter whose
            # addition we have not received yet; its term and its log, not its name, say
            # whether it may lead.
            self._reject("unknown-sender", f"{m.src!r} is not a peer of {self.node_id!r}")
        if not isinstance(m, RAFT_MESSAGES):
            self._reject("unknown-type", f"{type(m).__name__} is not a Raft message")
        if m.term < 0:  # type: ignore[attr-defined]
            self._reject("bad-field", "negative term")
        if isinstance(m, AppendEntries):
            if m.prev_index < 0 or m.commit < 0:
                self._reject("bad-field", "negative index")
            for k, e in enumerate(m.entries, start=m.prev_index + 1):
                if e.index != k or e.term > m.term or e.term < 1:
                    self._reject("bad-field", f"entry {k} is out of place")
                problem = None if e.conf is None else conf_entry_problem(e)
                if problem is not None:
                    self._reject("bad-field", f"configuration entry {e.index}: {problem}")
        elif isinstance(m, InstallSnapshot):
            found = chunk_problem(m, self.config.max_snapshot_bytes)
            # A chunk at offset 0 starts afresh; a stale or already covered one is answered
            # in step. Any other must continue the snapshot being received.
            if found is None and not (
                m.offset == 0 or m.term < self._term or m.index <= self.commit
            ):
                found = continuation_problem(self._incoming, m)
            if found is not None:
                self._reject(*found)
        elif isinstance(m, InstallSnapshotResponse) and (m.index < 0 or m.received < 0):
            self._reject("bad-field", "negative snapshot index or byte count")

    # ----------------------------------------------------------------- effects out

    def has_ready(self) -> bool:
        """True when :meth:`ready` has something for the driver."""
        return bool(
            self._msgs
            or self._log.unstable_from is not None
            or self._hs_dirty
            or self._role_changes
            or self._dropped
            or self._pending_broadcast
            or self._read_only.round_needed
            or self._reads
            or self.applied < self.commit
            or self._snapshot_to_save is not None
            or self._snapshot_to_restore is not None
        )

    def ready(self) -> Ready:
        """Take pending effects: persist first, then send, then apply."""
        if self._pending_broadcast:
            self._pending_broadcast = False
            if self._role is Role.LEADER:
                for peer in self.others:
                    self._send_append(peer, allow_empty=False)
        if self._read_only.round_needed:
            self._read_only.round_needed = False
            if self._role is Role.LEADER:
                self.heartbeat_elapsed = 0
                self._broadcast_heartbeat()
        persist = Persist(snapshot=self._snapshot_to_save)
        self._snapshot_to_save = None
        unstable = self._log.take_unstable()
        if unstable is not None:
            persist.truncate_from, persist.entries = unstable
        if self._hs_dirty or (self._commit_dirty and not persist.is_empty()):
            # The commit index rides along with writes that happen anyway: Raft does not
            # need it durable (a restarted node learns it again), so it never costs an
            # fsync of its own.
            persist.hard_state = self.hard_state()
            self._hs_dirty = self._commit_dirty = False
        committed: list[Committed] = []
        request: int | None = None
        if self.applied < self.commit:
            entries = self._log.slice(self.applied + 1, self.commit + 1)
            committed = [Committed(e) for e in entries]
            self.applied = self.commit
            request = self._trigger.due(entries, self.applied)
        ready = Ready(
            persist,
            self._msgs,
            committed,
            self._role_changes,
            self._dropped,
            reads=self._reads,
            snapshot=self._snapshot_to_restore,
            snapshot_request=request,
        )
        self._snapshot_to_restore = None
        self._msgs = []
        self._role_changes = []
        self._dropped = []
        self._reads = []
        return ready

    # ----------------------------------------------------------------- snapshots

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        """The driver snapshotted its state machine after applying exactly through ``index``.

        The core keeps the snapshot (``data`` must include everything replicated, the
        session table too), drops its log through ``index`` and hands the snapshot to the
        driver to store in the next ``Ready.persist.snapshot``. Returns it, or None when
        the log is already compacted that far (a snapshot was installed in between).
        Raises ``ValueError`` for an index this core has not handed out for applying yet.
        """
        if index <= self.snapshot_index:
            return None
        if index > self.applied:
            raise ValueError(f"cannot snapshot at {index}: only {self.applied} entries applied")
        conf = self._history.at(index)
        snap = Snapshot(index, self.term_at(index), conf.voters, conf.learners, bytes(data))
        self._compact_log_to(index, snap.term)
        self._history.compact_to(index)
        self.snapshot = snap
        self._snapshot_to_save = snap
        return snap

    # ----------------------------------------------------------------- reads

    def read_index(self, ctx: Any) -> None:
        """Ask for a linearizable read point for ``ctx``; it arrives in ``Ready.reads``.

        The driver serves the read once this node has applied up to the returned index.
        On the leader the point is its commit index, confirmed by a heartbeat round that a
        majority acknowledges (or, with ``read_mode="lease"``, by an unexpired lease). A
        follower asks the leader. Raises :class:`NotLeader` when no leader is known.
        """
        if self._role is Role.LEADER:
            self._leader_read(ctx, None, 0)
            return
        if self._leader is None or self._role is not Role.FOLLOWER:
            raise NotLeader(self.node_id, self._leader)
        rid = self._read_only.ask(ctx)
        self._send(ReadIndexRequest(self.node_id, self._leader, self._term, rid))

    # ----------------------------------------------------------------- leadership transfer

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` with TimeoutNow; it must be a caught-up voter.

        Raises :class:`TransferRefused` when this node is not the leader, ``target`` is
        not another voter, or ``target`` has not replicated the whole log. While a
        transfer is under way proposals are refused (:class:`ProposalDropped`); it is
        abandoned after an election timeout if the target never takes over.
        """
        if self._role is not Role.LEADER:
            raise TransferRefused(f"{self.node_id} is not the leader")
        if target not in self._other_voters:
            raise TransferRefused(f"{target!r} is not another voter of this cluster")
        pr = self.progress[target]
        if pr.match < self.last_index:
            raise TransferRefused(
                f"{target} is behind (has {pr.match} of {self.last_index} entries)"
            )
        self.transfer_target = target
        self._transfer_elapsed = 0
        self._send(TimeoutNow(self.node_id, target, self._term))

    # ----------------------------------------------------------------- membership

    def propose_conf_change(self, kind: ConfChangeKind | str, node: NodeId) -> int:
        """Append a single-server membership change to the leader's log; return its index.

        ``kind`` is a :class:`~ruflo_consensus.core.base.ConfChangeKind` (or its string
        value): add a learner, promote a learner, remove a voter, remove a learner
        (``add-voter`` is always refused: a node becomes a voter by way of a learner). The
        new configuration takes effect at once — on this node now, on each follower when
        the entry reaches its log — and quorums from then on are counted in it. A leader
        that removes itself keeps leading (without counting itself) until the change
        commits, then hands leadership to its most caught-up voter and steps down.

        Refused with :class:`~ruflo_consensus.core.base.ConfChangeRefused` (nothing
        changes) when this node is not the leader, a leadership transfer is under way,
        another change is not yet committed, no entry of this term is committed yet (the
        rule that closes the single-server change bug), the change makes no sense for the
        configuration (``unknown-node``, ``already-member``, ``no-voters``), a new node is
        to become a voter without first catching up as a learner (``learner-first``), or a
        learner to promote trails by more than ``RaftConfig.max_learner_lag`` entries.
        """
        try:
            change = self._check_conf_change(kind, node)
        except ConfChangeRefused as exc:
            self.conf_refused[exc.reason] = self.conf_refused.get(exc.reason, 0) + 1
            raise
        entry = Entry(self._term, self.last_index + 1, None, change)
        self._log.append(entry)
        self._pending_broadcast = True
        self._history.scan((entry,))
        self._on_log_configuration_changed()
        # removing a voter can shrink the quorum enough to commit what is already held
        self._maybe_commit()
        return entry.index

    def configuration_at(self, index: int) -> Configuration:
        """The configuration in effect just after entry ``index`` (from the snapshot point on;
        an earlier index gives the snapshot's configuration)."""
        return self._history.at(index)
