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
  go out together; up to ``max_inflight`` ``AppendEntries`` may be outstanding per follower;
- **snapshots and log compaction** (§7): the core asks the driver for a state machine
  snapshot when the applied log passes ``snapshot_entries`` entries or ``snapshot_bytes``
  bytes (:attr:`~.base.Ready.snapshot_request`), drops the log up to it on
  :meth:`RaftCore.compact`, and sends a follower whose next entry is gone an
  ``InstallSnapshot`` in chunks of ``snapshot_chunk_bytes``;
- **membership changes one server at a time** (thesis §4.1, with the rule added after
  the 2015 single-server bug): :meth:`RaftCore.propose_conf_change` adds or removes a
  voter or a learner; a configuration takes effect when its entry is appended and rolls
  back if it is truncated; a leader appends one only after committing an entry of its
  term and while no other change is uncommitted (see :mod:`.raft_membership`).

Time is ``tick()`` calls (``RaftConfig.tick_ms`` each); randomness is an injected
``random.Random``; messages and storage writes leave through :class:`~.base.Ready`.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgpack

from .base import (
    Committed,
    ConfChange,
    ConfChangeKind,
    ConfChangeRefused,
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
    Snapshot,
    TransferRefused,
)
from .raft_membership import ConfigHistory, Configuration, apply_change, configuration_problem

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
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
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 << 20
    snapshot_chunk_bytes: int = 64 << 10
    max_snapshot_bytes: int = 1 << 30
    max_learner_lag: int = 32

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
        if self.snapshot_entries < 0 or self.snapshot_bytes < 0:
            raise ValueError("snapshot_entries and snapshot_bytes must be >= 0 (0: off)")
        if self.snapshot_chunk_bytes < 1 or self.max_snapshot_bytes < 1:
            raise ValueError("snapshot_chunk_bytes and max_snapshot_bytes must be at least 1")
        if self.max_learner_lag < 0:
            raise ValueError("max_learner_lag must be >= 0")

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

        Followers refuse votes until ``election_ticks`` of *their* ticks have passed since
        they heard the leader — but the first of those ticks may come right after the
        heartbeat, so only ``election_ticks − 1`` whole tick intervals are guaranteed. The
        lease is counted from the leader's tick before it sent the round, so it lasts at
        most ``lease_ticks`` whole intervals of the leader's clock. With clocks off by up
        to ±``lease_drift_bound`` (d) the lease must therefore end within
        ``(election_ticks − 1) · (1 − d) / (1 + d)`` of the leader's ticks. (With
        ``election_ticks`` in place of ``election_ticks − 1`` a lease could outlive the
        followers' refusal by up to one tick at the drift bound.)
        """
        d = self.lease_drift_bound
        return int((self.election_ticks - 1) * (1.0 - d) / (1.0 + d))


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


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """Leader → follower: one chunk of the snapshot at ``(index, snap_term)``.

    ``data`` holds bytes ``[offset, offset + len(data))`` of the snapshot's ``total``
    bytes; ``done`` marks the last chunk. Every chunk repeats the snapshot's identity and
    membership so that the follower can tell chunks of different snapshots apart.
    """

    term: int
    index: int
    snap_term: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    offset: int
    total: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse(Message):
    """Follower → leader: ``received`` bytes of the snapshot at ``index`` have arrived.

    With ``done`` the follower holds (durably) every entry through ``index`` — it
    installed the snapshot, or it had already committed that far.
    """

    term: int
    index: int
    received: int
    done: bool


RAFT_MESSAGES: tuple[type[Message], ...] = (
    RequestVote,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
)


def entry_size(entry: Entry) -> int:
    """Bytes an entry takes on the wire (its msgpack encoding), for flow control."""
    p = entry.proposal
    if p is None:
        c = entry.conf
        if c is None:
            return 8
        return 24 + len(c.node) + sum(len(n) + 1 for n in c.voters + c.learners)
    try:
        return 16 + len(msgpack.packb([p.client, p.seq, p.command], use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return 16 + len(repr(p.command))


_KINDS = frozenset(k.value for k in ConfChangeKind)

# --------------------------------------------------------------------------- progress


class _ProgressState(enum.Enum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2  # the follower needs entries the leader compacted: InstallSnapshot chunks


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
    # SNAPSHOT state: which snapshot is being sent, how many of its bytes the follower
    # acknowledged, and how many heartbeat intervals passed without progress
    snapshot: Snapshot | None = None
    snap_offset: int = 0
    snap_offset_at_heartbeat: int = -1
    snap_stalls: int = 0

    def _reset(self, state: _ProgressState) -> None:
        self.state = state
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.inflight_bytes = 0
        self.snapshot = None
        self.snap_offset = 0
        self.snap_offset_at_heartbeat = -1
        self.snap_stalls = 0

    def become_probe(self) -> None:
        self._reset(_ProgressState.PROBE)

    def become_replicate(self) -> None:
        self._reset(_ProgressState.REPLICATE)

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset(_ProgressState.SNAPSHOT)
        self.snapshot = snapshot

    def paused(self, max_inflight: int, max_bytes: int) -> bool:
        if self.state is _ProgressState.PROBE:
            return self.probe_sent
        if self.state is _ProgressState.SNAPSHOT:
            return True
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


def _snapshot_identity(m: InstallSnapshot) -> tuple[Any, ...]:
    """What every chunk of one snapshot transfer has in common."""
    return (m.src, m.term, m.index, m.snap_term, m.voters, m.learners, m.total)


@dataclass(slots=True)
class _IncomingSnapshot:
    """A snapshot a follower is receiving chunk by chunk: its first chunk and the bytes."""

    first: InstallSnapshot
    buf: bytearray

    def same_snapshot(self, m: InstallSnapshot) -> bool:
        return _snapshot_identity(self.first) == _snapshot_identity(m)


class RaftCore:
    """One Raft node's protocol state. See the module docstring for the protocol.

    ``peers`` lists the cluster's bootstrap voters, this node included: the
    configuration in effect before any configuration entry (every node of a cluster
    passes the same list, on every restart). The configuration in effect is the one of
    the latest configuration entry in the log, or the snapshot's, or else ``peers``.
    A node started fresh to join a running cluster passes ``join=True`` (it need not
    be in ``peers``): it starts with an empty log, never campaigns, and waits for the
    leader, which adds it as a learner (:meth:`propose_conf_change`) and sends it the
    log or a snapshot.

    On restart a node passes what storage returned: ``hard_state``, ``snapshot`` (the
    latest one, or None) and ``entries`` (the log after the snapshot — from
    ``snapshot.index + 1``, or from 1 without one — contiguous); a fresh node passes none
    of them. With a snapshot the first ``Ready`` carries it in
    :attr:`~.base.Ready.snapshot` so that the driver restores its state machine before
    applying the entries after it.

    ``self.log[0]`` is a sentinel standing for the snapshot point (index and term of the
    last compacted entry; ``(0, 0)`` without a snapshot); ``self.log[k]`` is the entry at
    index ``snapshot_index + k``.
    """

    def __init__(
        self,
        node_id: NodeId,
        peers: Sequence[NodeId],
        rng: random.Random,
        config: RaftConfig | None = None,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        *,
        snapshot: Snapshot | None = None,
        join: bool = False,
    ) -> None:
        if node_id not in peers and not join:
            raise ValueError(
                f"{node_id!r} must be one of the peers {list(peers)!r} (or pass join=True)"
            )
        problem = configuration_problem(tuple(peers), ())
        if problem is not None:
            raise ValueError(f"bad peers: {problem}")
        self.node_id = node_id
        self.config = config or RaftConfig()
        self.rng = rng

        base_index, base_term = 0, 0
        base_conf = Configuration(tuple(peers))
        if snapshot is not None:
            if snapshot.index < 1 or snapshot.term < 1:
                raise ValueError("a stored snapshot has index and term of at least 1")
            problem = configuration_problem(snapshot.voters, snapshot.learners)
            if problem is not None:
                raise ValueError(f"the snapshot's membership is invalid: {problem}")
            base_index, base_term = snapshot.index, snapshot.term
            base_conf = Configuration(snapshot.voters, snapshot.learners)
        self._offset = base_index
        self.log: list[Entry] = [Entry(base_term, base_index, None)]
        for i, e in enumerate(entries, start=base_index + 1):
            if e.index != i:
                raise ValueError(f"stored entries are not contiguous at index {i}")
            self.log.append(e)
        self.snapshot: Snapshot | None = snapshot
        """The latest snapshot (taken here or installed from a leader), for lagging followers."""
        hs = hard_state or HardState(0, None, 0)
        self._term = hs.term
        self.vote: NodeId | None = hs.vote
        self.commit = max(base_index, min(hs.commit, self.last_index))
        self.applied = base_index
        # snapshots: one to hand to the driver for saving, one to restore its machine from
        self._snapshot_to_save: Snapshot | None = None
        self._snapshot_to_restore: Snapshot | None = snapshot
        self._incoming: _IncomingSnapshot | None = None
        self._asked_snapshot_at = base_index
        self._applied_bytes = 0
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, _Progress] = {}
        # membership: the configuration history of the log, and who we have heard of
        self._history = ConfigHistory(base_conf)
        self._history.scan(self.log)
        self._known: set[NodeId] = set(peers) | self._history.nodes()
        # a joining node votes and campaigns only once the cluster's own log or snapshot
        # names it — never on the strength of the bootstrap list (it may be a wiped node)
        self._joining = join and not (
            (snapshot is not None and base_conf.is_member(node_id))
            or any(c.is_member(node_id) for _, c in self._history.entries)
        )
        self.conf_refused: dict[str, int] = {}
        """Refused :meth:`propose_conf_change` calls, per reason."""
        self._set_configuration()

        self._msgs: list[Message] = []
        self._unstable_from: int | None = None
        self._hs_dirty = False  # term or vote changed: must be durable before we speak
        self._commit_dirty = False  # only the commit index moved: written with the next write
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
    def configuration(self) -> Configuration:
        """The configuration in effect (the latest one in the log, committed or not)."""
        return self._history.current

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """The voters of the configuration in effect."""
        return self._conf.voters

    @property
    def learners(self) -> tuple[NodeId, ...]:
        """The learners of the configuration in effect (they get the log but never vote)."""
        return self._conf.learners

    @property
    def peers(self) -> tuple[NodeId, ...]:
        """The voters of the configuration in effect (an alias of :attr:`voters`)."""
        return self._conf.voters

    @property
    def is_voter(self) -> bool:
        """True when this node votes in the configuration in effect."""
        return self._self_voter

    @property
    def conf_index(self) -> int:
        """Index of the latest configuration entry (0: the bootstrap or snapshot one)."""
        return self._history.current_index

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
        """Index of the last log entry (the snapshot's index when none follows it)."""
        return self._offset + len(self.log) - 1

    @property
    def snapshot_index(self) -> int:
        """Index of the last entry the snapshot covers (0 without a snapshot)."""
        return self._offset

    @property
    def first_index(self) -> int:
        """Index of the first entry still in the log (``snapshot_index + 1``)."""
        return self._offset + 1

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index``: the snapshot's term at the snapshot index, 0 for
        index 0, -1 when the entry is compacted away or beyond the log."""
        k = index - self._offset
        if 0 <= k < len(self.log):
            return self.log[k].term
        return 0 if index == 0 else -1

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` if the log still holds it (None when compacted or beyond)."""
        k = index - self._offset
        if 1 <= k < len(self.log):
            return self.log[k]
        return None

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
        if not self._other_voters:
            self._commit_alone()

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
        elif self.election_elapsed >= self.randomized_timeout and self._may_campaign():
            self._campaign(pre_vote=self.config.pre_vote)

    def step(self, m: Message) -> None:
        """Handle one message. Raises :class:`ProtocolError` (state unchanged) when invalid."""
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

        if isinstance(m, AppendEntries):
            self._handle_append(m)
        elif isinstance(m, AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif isinstance(m, VoteResponse):
            self._handle_vote_response(m)
        elif isinstance(m, TimeoutNow):
            if self._role is Role.FOLLOWER and m.src == self._leader and self._may_campaign():
                self._campaign(pre_vote=False, transfer=True)
        elif isinstance(m, ReadIndexRequest):
            self._handle_read_request(m)
        elif isinstance(m, ReadIndexResponse):
            ctx = self._remote_reads.pop(m.ctx, None)
            if ctx is not None:
                self._reads.append(ReadState(ctx, m.index))
        elif isinstance(m, InstallSnapshot):
            self._handle_snapshot(m)
        elif isinstance(m, InstallSnapshotResponse):
            self._handle_snapshot_response(m)

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
        if self._read_round_needed:
            self._read_round_needed = False
            if self._role is Role.LEADER:
                self.heartbeat_elapsed = 0
                self._broadcast_heartbeat()
        persist = Persist(snapshot=self._snapshot_to_save)
        self._snapshot_to_save = None
        if self._unstable_from is not None:
            persist.truncate_from = self._unstable_from
            persist.entries = self.log[self._unstable_from - self._offset :]
            self._unstable_from = None
        if self._hs_dirty or (self._commit_dirty and not persist.is_empty()):
            # The commit index rides along with writes that happen anyway: Raft does not
            # need it durable (a restarted node learns it again), so it never costs an
            # fsync of its own.
            persist.hard_state = self.hard_state()
            self._hs_dirty = self._commit_dirty = False
        committed: list[Committed] = []
        request: int | None = None
        if self.applied < self.commit:
            off = self._offset
            entries = self.log[self.applied + 1 - off : self.commit + 1 - off]
            committed = [Committed(e) for e in entries]
            self.applied = self.commit
            request = self._snapshot_due(entries)
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

    # ----------------------------------------------------------------- validation

    def _validate(self, m: Message) -> None:
        if m.dst != self.node_id:
            self._count("wrong-destination")
            raise ProtocolError(
                "wrong-destination", f"message for {m.dst!r} reached {self.node_id!r}"
            )
        if m.src == self.node_id or (
            m.src not in self._known
            and not isinstance(m, AppendEntries | InstallSnapshot | RequestVote)
        ):
            # A leader or candidate we have not heard of is fine: it may be a voter whose
            # addition we have not received yet; its term and its log, not its name, say
            # whether it may lead.
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
                if e.conf is not None:
                    self._validate_conf_entry(e)
        elif isinstance(m, InstallSnapshot):
            self._validate_snapshot_chunk(m)
        elif isinstance(m, InstallSnapshotResponse) and (m.index < 0 or m.received < 0):
            self._count("bad-field")
            raise ProtocolError("bad-field", "negative snapshot index or byte count")

    def _reject(self, reason: str, detail: str) -> NoReturn:
        self._count(reason)
        raise ProtocolError(reason, detail)

    def _validate_snapshot_chunk(self, m: InstallSnapshot) -> None:
        """Check a chunk's fields, then that it continues the snapshot being received.

        A chunk at offset 0 always starts a new assembly; a later one must belong to the
        snapshot being assembled (same leader, term, index, membership and size) and start
        exactly where the received bytes end — or lie wholly inside them (a retransmission,
        answered without changing anything). Anything else is refused, state unchanged.
        """
        if m.index < 1 or m.snap_term < 1 or m.snap_term > m.term:
            self._reject("bad-field", "snapshot index/term out of range")
        if m.offset < 0 or m.offset + len(m.data) > m.total:
            self._reject("bad-field", f"chunk [{m.offset}, +{len(m.data)}) outside {m.total}")
        if m.done != (m.offset + len(m.data) == m.total):
            self._reject("bad-field", "done must mark exactly the last chunk")
        if m.total > self.config.max_snapshot_bytes:
            self._reject(
                "snapshot-too-large",
                f"{m.total} bytes is over max_snapshot_bytes={self.config.max_snapshot_bytes}",
            )
        problem = configuration_problem(m.voters, m.learners)
        if problem is not None:
            self._reject("snapshot-membership", f"snapshot configuration: {problem}")
        if m.offset == 0 or m.term < self._term or m.index <= self.commit:
            return  # starts afresh, is stale (answered elsewhere), or is already covered
        inc = self._incoming
        if inc is None:
            self._reject("snapshot-out-of-order", f"chunk at {m.offset} without its beginning")
        if not inc.same_snapshot(m):
            self._reject(
                "snapshot-mismatch",
                f"chunk of snapshot ({m.index}, {m.snap_term}) from {m.src} while receiving "
                f"({inc.first.index}, {inc.first.snap_term}) from {inc.first.src}",
            )
        have = len(inc.buf)
        if m.offset > have or (m.offset < have < m.offset + len(m.data)):
            self._reject("snapshot-out-of-order", f"chunk at {m.offset} but {have} bytes received")

    def _count(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    # ----------------------------------------------------------------- snapshots

    def _snapshot_due(self, applied: list[Entry]) -> int | None:
        """After handing out ``applied``: ask for a snapshot once a threshold is passed."""
        cfg = self.config
        if cfg.snapshot_bytes:
            self._applied_bytes += sum(entry_size(e) for e in applied)
        since = self.applied - self._asked_snapshot_at
        if (cfg.snapshot_entries and since >= cfg.snapshot_entries) or (
            cfg.snapshot_bytes and self._applied_bytes >= cfg.snapshot_bytes
        ):
            self._asked_snapshot_at = self.applied
            self._applied_bytes = 0
            return self.applied
        return None

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        """The driver snapshotted its state machine after applying exactly through ``index``.

        The core keeps the snapshot (``data`` must include everything replicated, the
        session table too), drops its log through ``index`` and hands the snapshot to the
        driver to store in the next ``Ready.persist.snapshot``. Returns it, or None when
        the log is already compacted that far (a snapshot was installed in between).
        Raises ``ValueError`` for an index this core has not handed out for applying yet.
        """
        if index <= self._offset:
            return None
        if index > self.applied:
            raise ValueError(f"cannot snapshot at {index}: only {self.applied} entries applied")
        conf = self._history.at(index)
        snap = Snapshot(index, self.term_at(index), conf.voters, conf.learners, bytes(data))
        self._drop_log_through(index, snap.term)
        self._history.compact_to(index)
        self.snapshot = snap
        self._snapshot_to_save = snap
        return snap

    def _drop_log_through(self, index: int, term: int) -> None:
        """Make ``(index, term)`` the log's base, keeping the entries after it."""
        del self.log[: index - self._offset]
        self.log[0] = Entry(term, index, None)
        self._offset = index
        if self._asked_snapshot_at < index:
            self._asked_snapshot_at = index
            self._applied_bytes = 0
        if self._unstable_from is not None and self._unstable_from <= index:
            self._unstable_from = index + 1 if self.last_index > index else None

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        if not self._follow(m.src):
            return
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
            inc = self._incoming = _IncomingSnapshot(m, bytearray(m.data))
        else:
            assert inc is not None  # _validate_snapshot_chunk made sure
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
            self._drop_log_through(snap.index, snap.term)
            self._history.compact_to(snap.index, conf)
        else:
            self.log = [Entry(snap.term, snap.index, None)]
            self._offset = snap.index
            self._asked_snapshot_at = snap.index
            self._applied_bytes = 0
            self._unstable_from = snap.index + 1  # storage: drop whatever follows
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

    def _handle_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress_of(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.done:
            self._acknowledged(m.src, pr, m.index)
            return
        if (
            pr.state is _ProgressState.SNAPSHOT
            and pr.snapshot is not None
            and m.index == pr.snapshot.index
            and pr.snap_offset < m.received <= len(pr.snapshot.data)
        ):
            pr.snap_offset = m.received
            self._send_chunk(m.src, pr)

    def _start_snapshot(self, peer: NodeId, pr: _Progress) -> None:
        assert self.snapshot is not None, "a compacted log always has a snapshot"
        pr.become_snapshot(self.snapshot)
        self._send_chunk(peer, pr)

    def _send_chunk(self, peer: NodeId, pr: _Progress) -> None:
        snap = pr.snapshot
        assert snap is not None
        start = pr.snap_offset
        chunk = snap.data[start : start + self.config.snapshot_chunk_bytes]
        total = len(snap.data)
        self._send(
            InstallSnapshot(
                self.node_id,
                peer,
                self._term,
                snap.index,
                snap.term,
                snap.voters,
                snap.learners,
                start,
                total,
                chunk,
                start + len(chunk) == total,
            )
        )

    def _snapshot_heartbeat(self, peer: NodeId, pr: _Progress) -> None:
        """A heartbeat interval passed while sending a snapshot: resend or start over.

        No progress for one interval: the chunk or its answer was lost, so send the chunk
        again. No progress for two: the follower lost what it had received (it restarted,
        or another leader's chunks replaced it), so start over with the latest snapshot.
        """
        if pr.snap_offset == pr.snap_offset_at_heartbeat:
            pr.snap_stalls += 1
            if pr.snap_stalls >= 2:
                assert self.snapshot is not None
                pr.become_snapshot(self.snapshot)
            self._send_chunk(peer, pr)
        else:
            pr.snap_stalls = 0
        pr.snap_offset_at_heartbeat = pr.snap_offset

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
        for peer in self._other_voters:
            self._send(
                RequestVote(self.node_id, peer, vote_term, last, last_term, pre_vote, transfer)
            )

    def _tally(self) -> int:
        """Granted votes of voters of the configuration in effect (ours only if we are one)."""
        voters = self._conf.voters
        return sum(1 for node, granted in self.votes.items() if granted and node in voters)

    def _leader_is_recent(self) -> bool:
        """A leader is known and was heard from within an election timeout."""
        return self._leader is not None and self.election_elapsed < self.config.election_ticks

    def _hears_leader(self) -> bool:
        """True while this node leads, or heard from a leader within an election timeout."""
        return self._role is Role.LEADER or self._leader_is_recent()

    def _may_campaign(self) -> bool:
        """A voter of the configuration in effect may campaign — and, while that
        configuration is not committed yet, so may a voter of the committed one before it.

        The second case is a leader that appended its own removal and lost its quorum
        before the change committed: it may be the only node that holds the change, and
        the others (still counting it as a voter) may need its vote, which it refuses to
        anyone with a shorter log. Unless it can stand, no leader is ever elected again.
        It counts votes in the configuration in effect, which leaves itself out, so the
        usual majority overlap of one-server changes keeps elections safe; once it leads
        and the change commits, it steps down as any self-removed leader does.
        """
        if self._self_voter:
            return True
        if self._joining or not self._conf_change_pending():
            return False
        return self.node_id in self._history.at(self.commit).voters

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
        if not self._other_voters:
            self._commit_alone()
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
        if m.src not in self._other_voters:
            self._count("vote-from-non-voter")  # only the voters of our configuration count
            return
        self.votes[m.src] = m.granted
        if self._tally() >= self.quorum:
            self._won_election(m.pre_vote)
        elif len(self.votes) - self._tally() >= self.quorum:
            self._become_follower(self._term, None)

    def _log_matches(self, prev_index: int, prev_term: int) -> bool:
        """The log-matching check: do we hold an entry at ``prev_index`` with ``prev_term``?"""
        return self.term_at(prev_index) == prev_term

    def _follow(self, leader: NodeId) -> bool:
        """``leader`` sent us its log (same term): follow it; False when we lead ourselves."""
        if self._role is Role.LEADER:
            # Two leaders in one term cannot happen; refuse to touch the log if it does.
            self._count("leader-conflict")
            return False
        if self._role is not Role.FOLLOWER or self._leader != leader:
            self._become_follower(self._term, leader)
        self.election_elapsed = 0
        return True

    def _handle_append(self, m: AppendEntries) -> None:
        if not self._follow(m.src):
            return
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
            self._commit_dirty = True
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
        off = self._offset  # prev_index >= commit >= offset: every index here is in the log
        for k, entry in enumerate(entries):
            index = prev_index + 1 + k
            if index <= self.last_index:
                if self.log[index - off].term == entry.term:
                    continue
                del self.log[index - off :]
                rolled_back = self._history.truncate_from(index)
            else:
                rolled_back = False
            self.log.extend(entries[k:])
            self._mark_unstable(index)
            if self._history.scan(entries[k:]) or rolled_back:
                self._on_log_configuration_changed()
            return

    def _acknowledged(self, peer: NodeId, pr: _Progress, index: int) -> bool:
        """``peer`` durably holds our log through ``index``; False if that is nothing new."""
        if index <= pr.match:
            return False
        pr.match = index
        if pr.next <= index:
            pr.next = index + 1
        if pr.state is _ProgressState.SNAPSHOT:
            if index < self._offset:
                # still behind what the log holds; if it got all of the snapshot we were
                # sending (we compacted again meanwhile), send the latest one now
                if pr.snapshot is None or pr.snapshot.index <= index:
                    self._start_snapshot(peer, pr)
                return True
            pr.become_replicate()
        elif pr.state is _ProgressState.PROBE:
            pr.become_replicate()
        else:
            pr.free_to(index)
        if self._advance_commit():
            self._commit_advanced()
            return True
        if pr.match < self.last_index:
            self._send_append(peer, allow_empty=False)
        return True

    def _handle_append_response(self, m: AppendResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress_of(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            if self._pending_reads:
                self._release_reads()
        if pr.state is _ProgressState.SNAPSHOT:
            if m.success:
                self._acknowledged(m.src, pr, m.index)
            return
        if m.success:
            if self._acknowledged(m.src, pr, m.index):
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
            while index > self._offset and self.term_at(index) > m.hint_term:
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
        if pr.next <= self._offset:
            self._start_snapshot(peer, pr)  # the entries it needs next are compacted away
            return
        prev = pr.next - 1
        start = pr.next - self._offset
        batch = self.log[start : start + cfg.max_batch_entries]
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
            if pr.state is _ProgressState.SNAPSHOT:
                self._snapshot_heartbeat(peer, pr)
            # the match point, or index 0 (which always matches) when it is compacted away
            prev = pr.match if pr.match >= self._offset else 0
            self._send(
                AppendEntries(
                    self.node_id,
                    peer,
                    self._term,
                    prev,
                    self.term_at(prev),
                    (),
                    min(self.commit, pr.match),
                    self._round,
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

    def _advance_commit(self) -> bool:
        """Commit the highest index a majority of the voters holds, if of the current term.

        A leader that is not a voter (it is removing itself) does not count its own log.
        """
        progress = self.progress
        matches = [progress[v].match for v in self._other_voters]
        if self._self_voter:
            matches.append(self.last_index)
        matches.sort(reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit and self.term_at(candidate) == self._term:
            self.commit = candidate
            self._commit_dirty = True
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
        alone = not self._other_voters and self._self_voter
        if alone or (self.config.read_mode == "lease" and self.lease_valid()):
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
        """The latest heartbeat round a majority of the voters has acknowledged."""
        progress = self.progress
        rounds = [progress[v].acked_round for v in self._other_voters]
        if self._self_voter:
            rounds.append(self._round)
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

        ``kind`` is a :class:`~.base.ConfChangeKind` (or its string value): add a learner,
        promote a learner, remove a voter, remove a learner (``add-voter`` is always
        refused: a node becomes a voter by way of a learner). The new
        configuration takes effect at once — on this node now, on each follower when the
        entry reaches its log — and quorums from then on are counted in it. A leader that
        removes itself keeps leading (without counting itself) until the change commits,
        then hands leadership to its most caught-up voter and steps down.

        Refused with :class:`~.base.ConfChangeRefused` (nothing changes) when this node is
        not the leader, a leadership transfer is under way, another change is not yet
        committed, no entry of this term is committed yet (the rule that closes the
        single-server change bug), the change makes no sense for the configuration
        (``unknown-node``, ``already-member``, ``no-voters``), a new node is to become a
        voter without first catching up as a learner (``learner-first``), or a learner to
        promote trails by more than ``RaftConfig.max_learner_lag`` entries.
        """
        try:
            change = self._check_conf_change(kind, node)
        except ConfChangeRefused as exc:
            self.conf_refused[exc.reason] = self.conf_refused.get(exc.reason, 0) + 1
            raise
        index = self.last_index + 1
        self.log.append(Entry(self._term, index, None, change))
        self._mark_unstable(index)
        self._pending_broadcast = True
        self._history.scan((self.log[-1],))
        self._on_log_configuration_changed()
        # removing a voter can shrink the quorum enough to commit what is already held
        self._try_commit()
        return index

    def configuration_at(self, index: int) -> Configuration:
        """The configuration in effect just after entry ``index`` (from the snapshot point on;
        an earlier index gives the snapshot's configuration)."""
        return self._history.at(index)

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

    def _conf_change_pending(self) -> bool:
        """True while the latest configuration entry is not committed."""
        return self._history.current_index > self.commit

    def _validate_conf_entry(self, e: Entry) -> None:
        """A configuration entry from the wire must be well formed (state unchanged if not)."""
        c = e.conf
        assert c is not None
        problem = configuration_problem(c.voters, c.learners)
        if e.proposal is not None:
            problem = "an entry carries either a proposal or a configuration"
        elif not isinstance(c.kind, ConfChangeKind | str) or c.kind not in _KINDS:
            problem = f"unknown change kind {c.kind!r}"
        if problem is not None:
            self._reject("bad-field", f"configuration entry {e.index}: {problem}")

    def _on_log_configuration_changed(self) -> None:
        """A configuration entry was appended or truncated: the new one is in effect."""
        conf = self._history.current
        self._learn_nodes(conf.members)
        if self._history.entries and conf.is_member(self.node_id):
            self._joining = False  # a configuration entry names us
        self._set_configuration()

    def _learn_nodes(self, nodes: Sequence[NodeId]) -> None:
        self._known.update(nodes)

    def _set_configuration(self) -> None:
        """Cache the configuration in effect; a leader tracks progress of its new members."""
        conf = self._history.current
        me = self.node_id
        self._conf = conf
        self._self_voter = me in conf.voters and not self._joining
        self._other_voters: tuple[NodeId, ...] = tuple(v for v in conf.voters if v != me)
        self.others: tuple[NodeId, ...] = tuple(n for n in conf.members if n != me)
        self.quorum = conf.quorum
        if self._role is Role.LEADER:
            # a new member is probed from the configuration entry that adds it (the last
            # one): the probe carries that entry, and a rejection backs off from there
            nxt = max(1, self.last_index)
            old = self.progress
            self.progress = {
                n: old[n] if n in old else _Progress(match=0, next=nxt) for n in self.others
            }

    def _progress_of(self, peer: NodeId) -> _Progress | None:
        """The leader's progress record of ``peer`` (None, counted, once it left)."""
        pr = self.progress.get(peer)
        if pr is None:
            self._count("non-member-response")
        return pr

    def _try_commit(self) -> None:
        if self._advance_commit():
            self._commit_advanced()

    def _commit_alone(self) -> None:
        """No other voter to wait for: what this node holds is committed."""
        self._try_commit()

    def _commit_advanced(self) -> None:
        """The leader's commit moved: release reads, tell everyone, leave if removed."""
        self._on_commit_advanced()
        for other in self.others:
            self._send_append(other, allow_empty=True)
        self._leave_if_removed()

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

    # ----------------------------------------------------------------- helpers

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _mark_unstable(self, index: int) -> None:
        if self._unstable_from is None or index < self._unstable_from:
            self._unstable_from = index
