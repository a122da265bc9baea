"""A sans-IO Raft core: election with pre-vote and check-quorum, pipelined replication.

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
  go out together; up to ``max_inflight`` ``AppendEntries`` may be outstanding per follower.

Time is ``tick()`` calls (``RaftConfig.tick_ms`` each); randomness is an injected
``random.Random``; messages and storage writes leave through :class:`~.base.Ready`.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .base import (
    Committed,
    Entry,
    HardState,
    Message,
    NodeId,
    NotLeader,
    Persist,
    Proposal,
    ProposalDropped,
    ProtocolError,
    ReadState,
    Ready,
    Role,
    RoleChange,
    TransferRefused,
)

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "RaftConfig",
    "RaftCore",
    "RequestVote",
    "VoteResponse",
]


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Timing and flow settings. Defaults: election 150–300 ms, heartbeat 50 ms, 10 ms ticks."""

    tick_ms: int = 10
    election_timeout_min_ms: int = 150
    election_timeout_max_ms: int = 300
    heartbeat_ms: int = 50
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 8
    max_batch_entries: int = 64
    max_inflight_bytes: int = 4 << 20
    max_batch_bytes: int = 1 << 20
    max_uncommitted_entries: int = 10_000
    read_mode: str = "read-index"
    lease_drift_bound: float = 0.1

    def __post_init__(self) -> None:
        if self.tick_ms <= 0:
            raise ValueError("tick_ms must be positive")
        if not 0 < self.heartbeat_ms < self.election_timeout_min_ms:
            raise ValueError("need 0 < heartbeat_ms < election_timeout_min_ms")
        if self.election_timeout_max_ms <= self.election_timeout_min_ms:
            raise ValueError("election_timeout_max_ms must exceed election_timeout_min_ms")
        if self.max_inflight < 1 or self.max_batch_entries < 1:
            raise ValueError("max_inflight and max_batch_entries must be at least 1")
        if self.max_inflight_bytes < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_inflight_bytes and max_batch_bytes must be at least 1")
        if self.max_uncommitted_entries < 1:
            raise ValueError("max_uncommitted_entries must be at least 1")
        if self.read_mode not in ("read-index", "lease"):
            raise ValueError("read_mode must be 'read-index' or 'lease'")
        if self.read_mode == "lease" and not self.check_quorum:
            raise ValueError("lease reads are only safe with check_quorum")
        if not 0.0 <= self.lease_drift_bound < 1.0:
            raise ValueError("lease_drift_bound must be in [0, 1)")

    @property
    def election_ticks(self) -> int:
        """Minimum election timeout in ticks."""
        return max(1, self.election_timeout_min_ms // self.tick_ms)

    @property
    def election_ticks_max(self) -> int:
        """Maximum (exclusive) randomized election timeout in ticks."""
        return max(self.election_ticks + 1, self.election_timeout_max_ms // self.tick_ms)

    @property
    def heartbeat_ticks(self) -> int:
        """Heartbeat interval in ticks."""
        return max(1, self.heartbeat_ms // self.tick_ms)

    @property
    def lease_ticks(self) -> int:
        """How long a quorum's acknowledgement keeps a lease, on the leader's clock.

        Followers refuse votes for ``election_ticks`` on *their* clocks after hearing the
        leader; with clocks off by up to ±``lease_drift_bound`` the lease must end within
        ``election_ticks · (1 − d) / (1 + d)`` of the leader's clock.
        """
        d = self.lease_drift_bound
        return int(self.election_ticks * (1.0 - d) / (1.0 + d))


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    """Ask for a vote at ``term`` (a pre-vote proposes ``term`` without adopting it)."""

    term: int
    last_index: int
    last_term: int
    pre_vote: bool
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    """Answer to :class:`RequestVote`."""

    term: int
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """Replicate ``entries`` after ``(prev_index, prev_term)``; also the heartbeat."""

    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    """Answer to :class:`AppendEntries`.

    On success ``index`` is the last index the follower now matches. On rejection
    ``index`` is the rejected ``prev_index`` and ``hint_index``/``hint_term`` say where the
    follower's log diverges (first index of its conflicting term, and that term; term 0
    when its log is simply shorter).
    """

    term: int
    success: bool
    index: int
    hint_index: int
    hint_term: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leader → chosen successor: start an election now (leadership transfer)."""

    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest(Message):
    """Follower → leader: confirm leadership and tell me a read point for ``ctx``."""

    term: int
    ctx: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse(Message):
    """Leader → follower: the read point for ``ctx`` (-1: refused)."""

    term: int
    ctx: int
    index: int


RAFT_MESSAGES: tuple[type[Message], ...] = (
    RequestVote,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)


def entry_size(entry: Entry) -> int:
    """Bytes an entry takes on the wire (its msgpack encoding), for flow control."""
    p = entry.proposal
    if p is None:
        return 8
    try:
        return 16 + len(msgpack.packb([p.client, p.seq, p.command], use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return 16 + len(repr(p.command))


# --------------------------------------------------------------------------- progress


class _ProgressState(enum.Enum):
    PROBE = 0
    REPLICATE = 1


@dataclass(slots=True)
class _Progress:
    """The leader's view of one follower."""

    match: int = 0
    next: int = 1
    state: _ProgressState = _ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = False
    match_at_heartbeat: int = -1
    acked_round: int = 0
    inflight: deque[tuple[int, int]] = field(default_factory=deque)
    inflight_bytes: int = 0

    def become_probe(self) -> None:
        self.state = _ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.inflight_bytes = 0

    def become_replicate(self) -> None:
        self.state = _ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.inflight_bytes = 0

    def paused(self, max_inflight: int, max_bytes: int) -> bool:
        if self.state is _ProgressState.PROBE:
            return self.probe_sent
        return len(self.inflight) >= max_inflight or self.inflight_bytes >= max_bytes

    def add_inflight(self, last: int, size: int) -> None:
        self.inflight.append((last, size))
        self.inflight_bytes += size

    def free_to(self, index: int) -> None:
        while self.inflight and self.inflight[0][0] <= index:
            self.inflight_bytes -= self.inflight.popleft()[1]

    def free_one(self) -> None:
        if self.inflight:
            self.inflight_bytes -= self.inflight.popleft()[1]


# --------------------------------------------------------------------------- the core


class RaftCore:
    """One Raft node's protocol state. See the module docstring for the protocol.

    ``peers`` lists every voter including this node. ``hard_state`` and ``entries`` are
    what storage returned on restart (``entries`` start at index 1, contiguous); a fresh
    node passes neither.
    """

    def __init__(
        self,
        node_id: NodeId,
        peers: Sequence[NodeId],
        rng: random.Random,
        config: RaftConfig | None = None,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
    ) -> None:
        if node_id not in peers:
            raise ValueError(f"{node_id!r} must be one of the peers {list(peers)!r}")
        if len(set(peers)) != len(peers):
            raise ValueError("peer ids must be unique")
        self.node_id = node_id
        self.config = config or RaftConfig()
        self.peers: tuple[NodeId, ...] = tuple(peers)
        self.others: tuple[NodeId, ...] = tuple(p for p in peers if p != node_id)
        self.quorum = len(self.peers) // 2 + 1
        self.rng = rng

        self.log: list[Entry] = [Entry(0, 0, None)]
        for i, e in enumerate(entries, start=1):
            if e.index != i:
                raise ValueError(f"stored entries are not contiguous at index {i}")
            self.log.append(e)
        hs = hard_state or HardState(0, None, 0)
        self._term = hs.term
        self.vote: NodeId | None = hs.vote
        self.commit = min(hs.commit, self.last_index)
        self.applied = 0
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, _Progress] = {}

        self._msgs: list[Message] = []
        self._unstable_from: int | None = None
        self._hs_dirty = False
        self._role_changes: list[RoleChange] = []
        self._dropped: list[tuple[Proposal, str]] = []
        self._pending_broadcast = False
        # leadership transfer
        self.transfer_target: NodeId | None = None
        self._transfer_elapsed = 0
        # reads: numbered heartbeat rounds confirm leadership for ReadIndex and leases
        self.ticks = 0
        self._round = 0
        self._round_tick: dict[int, int] = {}
        self._read_round_needed = False
        self._pending_reads: list[tuple[int, Any, int, NodeId | None, int]] = []
        self._reads_before_commit: list[tuple[Any, NodeId | None, int]] = []
        self._remote_reads: dict[int, Any] = {}
        self._next_read_id = 0
        self._reads: list[ReadState] = []
        # counters a driver may export
        self.rejected: dict[str, int] = {}

    # ----------------------------------------------------------------- properties

    @property
    def role(self) -> Role:
        """Current role (follower, pre-candidate, candidate, leader)."""
        return self._role

    @property
    def term(self) -> int:
        """Current term."""
        return self._term

    @property
    def leader(self) -> NodeId | None:
        """The leader this node follows (itself when leader), or None."""
        return self._leader

    @property
    def last_index(self) -> int:
        """Index of the last log entry (0 when empty)."""
        return len(self.log) - 1

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (0 for index 0); -1 when beyond the log."""
        if index < len(self.log):
            return self.log[index].term
        return -1

    def hard_state(self) -> HardState:
        """The current durable state (term, vote, commit)."""
        return HardState(self._term, self.vote, self.commit)

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
        index = self.last_index + 1
        self.log.append(Entry(self._term, index, proposal))
        self._mark_unstable(index)
        self._pending_broadcast = True
        if not self.others:
            self._advance_commit()

    def tick(self) -> None:
        """Advance the logical clock by one tick: elections, heartbeats, check-quorum."""
        self.election_elapsed += 1
        self.ticks += 1
        if self._role is Role.LEADER:
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
        elif self.election_elapsed >= self.randomized_timeout:
            self._campaign(pre_vote=self.config.pre_vote)

    def step(self, m: Message) -> None:
        """Handle one message. Raises :class:`ProtocolError` (state unchanged) when invalid."""
        self._validate(m)
        mterm: int = m.term  # type: ignore[attr-defined]
        if mterm > self._term:
            if isinstance(m, RequestVote) and not m.transfer:
                in_lease = (
                    self.config.check_quorum
                    and self._leader is not None
                    and self.election_elapsed < self.config.election_ticks
                )
                if in_lease:
                    self._count("vote-in-lease")
                    return
            if (isinstance(m, RequestVote) and m.pre_vote) or (
                isinstance(m, VoteResponse) and m.pre_vote and m.granted
            ):
                pass  # a pre-vote never moves anyone's term
            else:
                leader = m.src if isinstance(m, AppendEntries) else None
                self._become_follower(mterm, leader)
        elif mterm < self._term:
            if isinstance(m, AppendEntries):
                # Tell a stale leader about the newer term so it steps down.
                self._send(AppendResponse(self.node_id, m.src, self._term, False, 0, 0, 0))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(VoteResponse(self.node_id, m.src, self._term, False, True))
            self._count("stale-term")
            return

        if isinstance(m, AppendEntries):
            self._handle_append(m)
        elif isinstance(m, AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif isinstance(m, VoteResponse):
            self._handle_vote_response(m)
        elif isinstance(m, TimeoutNow):
            if self._role is Role.FOLLOWER and m.src == self._leader:
                self._campaign(pre_vote=False, transfer=True)
        elif isinstance(m, ReadIndexRequest):
            self._handle_read_request(m)
        elif isinstance(m, ReadIndexResponse):
            ctx = self._remote_reads.pop(m.ctx, None)
            if ctx is not None:
                self._reads.append(ReadState(ctx, m.index))

    # ----------------------------------------------------------------- effects out

    def has_ready(self) -> bool:
        """True when :meth:`ready` has something for the driver."""
        return bool(
            self._msgs
            or self._unstable_from is not None
            or self._hs_dirty
            or self._role_changes
            or self._dropped
            or self._pending_broadcast
            or self._read_round_needed
            or self._reads
            or self.applied < self.commit
        )

    def ready(self) -> Ready:
        """Take pending effects: persist first, then send, then apply."""
        if self._pending_broadcast:
            self._pending_broadcast = False
            if self._role is Role.LEADER:
                for peer in self.others:
                    self._send_append(peer, allow_empty=False)
        if self._read_round_needed:
            self._read_round_needed = False
            if self._role is Role.LEADER:
                self.heartbeat_elapsed = 0
                self._broadcast_heartbeat()
        persist = Persist()
        if self._unstable_from is not None:
            persist.truncate_from = self._unstable_from
            persist.entries = self.log[self._unstable_from :]
            self._unstable_from = None
        if self._hs_dirty:
            persist.hard_state = self.hard_state()
            self._hs_dirty = False
        committed: list[Committed] = []
        if self.applied < self.commit:
            committed = [Committed(e) for e in self.log[self.applied + 1 : self.commit + 1]]
            self.applied = self.commit
        ready = Ready(
            persist, self._msgs, committed, self._role_changes, self._dropped, reads=self._reads
        )
        self._msgs = []
        self._role_changes = []
        self._dropped = []
        self._reads = []
        return ready

    # ----------------------------------------------------------------- validation

    def _validate(self, m: Message) -> None:
        if m.dst != self.node_id:
            self._count("wrong-destination")
            raise ProtocolError(
                "wrong-destination", f"message for {m.dst!r} reached {self.node_id!r}"
            )
        if m.src not in self.peers or m.src == self.node_id:
            self._count("unknown-sender")
            raise ProtocolError("unknown-sender", f"{m.src!r} is not a peer of {self.node_id!r}")
        if not isinstance(m, RAFT_MESSAGES):
            self._count("unknown-type")
            raise ProtocolError("unknown-type", f"{type(m).__name__} is not a Raft message")
        if m.term < 0:  # type: ignore[attr-defined]
            self._count("bad-field")
            raise ProtocolError("bad-field", "negative term")
        if isinstance(m, AppendEntries):
            if m.prev_index < 0 or m.commit < 0:
                self._count("bad-field")
                raise ProtocolError("bad-field", "negative index")
            for k, e in enumerate(m.entries, start=m.prev_index + 1):
                if e.index != k or e.term > m.term or e.term < 1:
                    self._count("bad-field")
                    raise ProtocolError("bad-field", f"entry {k} is out of place")

    def _count(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    # ----------------------------------------------------------------- roles

    def _random_timeout(self) -> int:
        return self.rng.randrange(self.config.election_ticks, self.config.election_ticks_max)

    def _set_role(self, role: Role, leader: NodeId | None) -> None:
        changed = role is not self._role or leader != self._leader
        self._role = role
        self._leader = leader
        if changed:
            self._role_changes.append(RoleChange(self.node_id, role, self._term, leader))

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        if term != self._term:
            self._term = term
            self.vote = None
            self._hs_dirty = True
        self.election_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        self.progress = {}
        self.transfer_target = None
        self._fail_reads()
        if leader != self._leader:
            self._fail_remote_reads()
        self._set_role(Role.FOLLOWER, leader)

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        if pre_vote:
            vote_term = self._term + 1
            self._set_role(Role.PRE_CANDIDATE, None)
        else:
            self._term += 1
            self.vote = self.node_id
            self._hs_dirty = True
            vote_term = self._term
            self._set_role(Role.CANDIDATE, None)
        self.votes = {self.node_id: True}
        self._fail_remote_reads()
        if self._tally() >= self.quorum:
            self._won_election(pre_vote)
            return
        last = self.last_index
        last_term = self.term_at(last)
        for peer in self.others:
            self._send(
                RequestVote(self.node_id, peer, vote_term, last, last_term, pre_vote, transfer)
            )

    def _tally(self) -> int:
        return sum(1 for granted in self.votes.values() if granted)

    def _won_election(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        last = self.last_index
        self.progress = {p: _Progress(match=0, next=last + 1) for p in self.others}
        self._round_tick = {}
        self._set_role(Role.LEADER, self.node_id)
        # A no-op entry of the new term lets the leader commit entries of earlier terms.
        self.log.append(Entry(self._term, last + 1, None))
        self._mark_unstable(last + 1)
        if not self.others:
            self._advance_commit()
        for peer in self.others:
            self._send_append(peer, allow_empty=True)

    # ----------------------------------------------------------------- handlers

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        my_last = self.last_index
        my_term = self.term_at(my_last)
        return last_term > my_term or (last_term == my_term and last_index >= my_last)

    def _handle_request_vote(self, m: RequestVote) -> None:
        up_to_date = self._log_up_to_date(m.last_index, m.last_term)
        if m.pre_vote:
            granted = m.term > self._term and up_to_date
            self._send(
                VoteResponse(self.node_id, m.src, m.term if granted else self._term, granted, True)
            )
            return
        can_vote = self.vote == m.src or (self.vote is None and self._leader is None)
        granted = can_vote and up_to_date
        if granted:
            self.vote = m.src
            self._hs_dirty = True
            self.election_elapsed = 0
        self._send(VoteResponse(self.node_id, m.src, self._term, granted, False))

    def _handle_vote_response(self, m: VoteResponse) -> None:
        if m.pre_vote:
            if self._role is not Role.PRE_CANDIDATE or m.term != self._term + 1:
                return
        elif self._role is not Role.CANDIDATE or m.term != self._term:
            return
        self.votes[m.src] = m.granted
        if self._tally() >= self.quorum:
            self._won_election(m.pre_vote)
        elif len(self.votes) - self._tally() >= self.quorum:
            self._become_follower(self._term, None)

    def _log_matches(self, prev_index: int, prev_term: int) -> bool:
        """The log-matching check: do we hold an entry at ``prev_index`` with ``prev_term``?"""
        return self.term_at(prev_index) == prev_term

    def _handle_append(self, m: AppendEntries) -> None:
        if self._role is Role.LEADER:
            # Two leaders in one term cannot happen; refuse to touch the log if it does.
            self._count("leader-conflict")
            return
        if self._role is not Role.FOLLOWER or self._leader != m.src:
            self._become_follower(self._term, m.src)
        self.election_elapsed = 0
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
            hint_index, hint_term = self._conflict_hint(m.prev_index)
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
        self._append_from_leader(m.prev_index, m.entries)
        last_new = m.prev_index + len(m.entries)
        new_commit = min(m.commit, last_new)
        if new_commit > self.commit:
            self.commit = new_commit
            self._hs_dirty = True
        self._send(AppendResponse(self.node_id, m.src, self._term, True, last_new, 0, 0, m.round))

    def _conflict_hint(self, prev_index: int) -> tuple[int, int]:
        if prev_index > self.last_index:
            return self.last_index + 1, 0
        term = self.term_at(prev_index)
        index = prev_index
        while index - 1 > self.commit and self.term_at(index - 1) == term:
            index -= 1
        return index, term

    def _append_from_leader(self, prev_index: int, entries: tuple[Entry, ...]) -> None:
        for k, entry in enumerate(entries):
            index = prev_index + 1 + k
            if index <= self.last_index:
                if self.log[index].term == entry.term:
                    continue
                del self.log[index:]
            self.log.extend(entries[k:])
            self._mark_unstable(index)
            return

    def _handle_append_response(self, m: AppendResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self.progress[m.src]
        pr.recent_active = True
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            if self._pending_reads:
                self._release_reads()
        if m.success:
            if m.index > pr.match:
                pr.match = m.index
                if pr.next <= m.index:
                    pr.next = m.index + 1
                if pr.state is _ProgressState.PROBE:
                    pr.become_replicate()
                else:
                    pr.free_to(m.index)
                if self._advance_commit():
                    self._on_commit_advanced()
                    for peer in self.others:
                        self._send_append(peer, allow_empty=True)
                    return
                if pr.match < self.last_index:
                    self._send_append(m.src, allow_empty=False)
                return
            # A reply that acknowledges nothing new (a heartbeat's or a duplicate).
            if pr.state is _ProgressState.PROBE:
                pr.probe_sent = False
            elif pr.paused(self.config.max_inflight, self.config.max_inflight_bytes):
                pr.free_one()  # let one more append out
            if pr.match < self.last_index:
                self._send_append(m.src, allow_empty=False)
            return
        # rejection: back off
        if pr.state is _ProgressState.REPLICATE:
            if m.index <= pr.match:
                return  # stale
            pr.become_probe()
        elif m.index != pr.next - 1:
            return  # stale probe answer
        pr.next = max(pr.match + 1, min(self._next_after_conflict(m), m.index))
        pr.probe_sent = False
        self._send_append(m.src, allow_empty=True)

    def _next_after_conflict(self, m: AppendResponse) -> int:
        if m.hint_term > 0:
            index = min(m.index, self.last_index)
            while index > 0 and self.term_at(index) > m.hint_term:
                index -= 1
            if index > 0 and self.term_at(index) == m.hint_term:
                return index + 1
        return m.hint_index

    # ----------------------------------------------------------------- replication

    def _send_append(self, peer: NodeId, allow_empty: bool) -> None:
        pr = self.progress[peer]
        cfg = self.config
        if pr.paused(cfg.max_inflight, cfg.max_inflight_bytes):
            return
        prev = pr.next - 1
        batch = self.log[pr.next : pr.next + cfg.max_batch_entries]
        size = 0
        for k, e in enumerate(batch):
            esize = entry_size(e)
            if k > 0 and size + esize > cfg.max_batch_bytes:
                batch = batch[:k]
                break
            size += esize
        entries = tuple(batch)
        if not entries and not allow_empty:
            return
        self._send(
            AppendEntries(
                self.node_id, peer, self._term, prev, self.term_at(prev), entries, self.commit
            )
        )
        if pr.state is _ProgressState.REPLICATE:
            if entries:
                last = entries[-1].index
                pr.next = last + 1
                pr.add_inflight(last, size)
        else:
            pr.probe_sent = True

    def _broadcast_heartbeat(self) -> None:
        self._round += 1
        self._round_tick[self._round] = self.ticks
        last = self.last_index
        for peer in self.others:
            pr = self.progress[peer]
            stalled = pr.match < last and pr.match == pr.match_at_heartbeat
            pr.match_at_heartbeat = pr.match
            if stalled and pr.state is _ProgressState.REPLICATE:
                # Nothing was acknowledged for a whole heartbeat interval: the optimistic
                # appends were probably lost. Probe again from the last known match.
                pr.become_probe()
                self._send_append(peer, allow_empty=True)
                continue
            self._send(
                AppendEntries(
                    self.node_id,
                    peer,
                    self._term,
                    pr.match,
                    self.term_at(pr.match),
                    (),
                    min(self.commit, pr.match),
                    self._round,
                )
            )

    def _quorum_active(self) -> bool:
        active = 1 + sum(1 for p in self.progress.values() if p.recent_active)
        for p in self.progress.values():
            p.recent_active = False
        return active >= self.quorum

    def _advance_commit(self) -> bool:
        """Commit the highest index a majority holds, if it is from the current term."""
        matches = sorted((p.match for p in self.progress.values()), reverse=True)
        matches.insert(0, self.last_index)
        matches.sort(reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit and self.term_at(candidate) == self._term:
            self.commit = candidate
            self._hs_dirty = True
            return True
        return False

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
        self._next_read_id += 1
        self._remote_reads[self._next_read_id] = ctx
        self._send(ReadIndexRequest(self.node_id, self._leader, self._term, self._next_read_id))

    def _handle_read_request(self, m: ReadIndexRequest) -> None:
        if self._role is not Role.LEADER:
            self._send(ReadIndexResponse(self.node_id, m.src, self._term, m.ctx, -1))
            return
        self._leader_read(None, m.src, m.ctx)

    def _leader_read(self, ctx: Any, origin: NodeId | None, rid: int) -> None:
        if self.term_at(self.commit) != self._term:
            # Until an entry of this term commits, the commit index may be stale.
            self._reads_before_commit.append((ctx, origin, rid))
            return
        index = self.commit
        if not self.others or (self.config.read_mode == "lease" and self.lease_valid()):
            self._deliver_read(ctx, origin, rid, index)
            return
        self._pending_reads.append((self._round + 1, ctx, index, origin, rid))
        self._read_round_needed = True

    def lease_valid(self) -> bool:
        """True while a majority's heartbeat acknowledgement keeps this leader's lease."""
        if self._role is not Role.LEADER or not self.config.check_quorum:
            return False
        sent = self._round_tick.get(self._quorum_round())
        return sent is not None and self.ticks < sent + self.config.lease_ticks

    def _quorum_round(self) -> int:
        rounds = [self._round, *(p.acked_round for p in self.progress.values())]
        rounds.sort(reverse=True)
        return rounds[self.quorum - 1]

    def _release_reads(self) -> None:
        confirmed = self._quorum_round()
        keep = []
        for entry in self._pending_reads:
            needed, ctx, index, origin, rid = entry
            if needed <= confirmed:
                self._deliver_read(ctx, origin, rid, index)
            else:
                keep.append(entry)
        self._pending_reads = keep
        floor = min(confirmed, *(e[0] for e in keep)) if keep else confirmed
        for r in [r for r in self._round_tick if r < floor]:
            del self._round_tick[r]

    def _deliver_read(self, ctx: Any, origin: NodeId | None, rid: int, index: int) -> None:
        if origin is None:
            self._reads.append(ReadState(ctx, index))
        else:
            self._send(ReadIndexResponse(self.node_id, origin, self._term, rid, index))

    def _on_commit_advanced(self) -> None:
        if self._reads_before_commit and self.term_at(self.commit) == self._term:
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for ctx, origin, rid in waiting:
                self._leader_read(ctx, origin, rid)

    def _fail_reads(self) -> None:
        for _, ctx, _, origin, rid in self._pending_reads:
            self._deliver_read(ctx, origin, rid, -1)
        for ctx, origin, rid in self._reads_before_commit:
            self._deliver_read(ctx, origin, rid, -1)
        self._pending_reads = []
        self._reads_before_commit = []

    def _fail_remote_reads(self) -> None:
        for ctx in self._remote_reads.values():
            self._reads.append(ReadState(ctx, -1))
        self._remote_reads = {}

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
        if target not in self.progress:
            raise TransferRefused(f"{target!r} is not another voter of this cluster")
        pr = self.progress[target]
        if pr.match < self.last_index:
            raise TransferRefused(
                f"{target} is behind (has {pr.match} of {self.last_index} entries)"
            )
        self.transfer_target = target
        self._transfer_elapsed = 0
        self._send(TimeoutNow(self.node_id, target, self._term))

    # ----------------------------------------------------------------- helpers

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _mark_unstable(self, index: int) -> None:
        if self._unstable_from is None or index < self._unstable_from:
            self._unstable_from = index
