"""The state every Raft role shares, and the primitives the role step functions build on.

:class:`RaftState` is the base of :class:`~.core.RaftCore`: it holds the node's state
(term, vote, log, commit, configuration, progress, reads), answers the read-only
questions (``term``, ``last_index``, ``voters``, …) and offers what every role needs —
sending, counting a rejection, becoming a follower, taking a new configuration into
effect. The roles add their step functions on top (:mod:`.leader`, :mod:`.election`,
:mod:`.follower`) and :mod:`.core` puts them together behind the public events.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, NoReturn

from ..base import (
    Entry,
    HardState,
    Message,
    NodeId,
    Proposal,
    ProtocolError,
    ReadState,
    Role,
    RoleChange,
    Snapshot,
)
from .config import RaftConfig
from .log import RaftLog
from .membership import ConfigHistory, Configuration, configuration_problem
from .messages import ReadIndexRequest, ReadIndexResponse
from .progress import Progress
from .read_only import ReadOnly
from .snapshot import IncomingSnapshot, SnapshotTrigger

__all__ = ["RaftState"]


class RaftState:
    """One Raft node's state and the primitives on it (see :class:`~.core.RaftCore`)."""

    def __init__(
        self,
        node_id: NodeId,
        voters: Sequence[NodeId],
        rng: random.Random,
        config: RaftConfig | None = None,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        *,
        snapshot: Snapshot | None = None,
        join: bool = False,
    ) -> None:
        """See :class:`~.core.RaftCore` for the arguments."""
        if node_id not in voters and not join:
            raise ValueError(
                f"{node_id!r} must be one of the voters {list(voters)!r} (or pass join=True)"
            )
        problem = configuration_problem(tuple(voters), ())
        if problem is not None:
            raise ValueError(f"bad voters: {problem}")
        self.node_id = node_id
        self.config = config or RaftConfig()
        self.rng = rng

        base_index, base_term = 0, 0
        base_conf = Configuration(tuple(voters))
        if snapshot is not None:
            if snapshot.index < 1 or snapshot.term < 1:
                raise ValueError("a stored snapshot has index and term of at least 1")
            problem = configuration_problem(snapshot.voters, snapshot.learners)
            if problem is not None:
                raise ValueError(f"the snapshot's membership is invalid: {problem}")
            base_index, base_term = snapshot.index, snapshot.term
            base_conf = Configuration(snapshot.voters, snapshot.learners)
        self._log = RaftLog(base_index, base_term, list(entries))
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
        self._incoming: IncomingSnapshot | None = None
        self._trigger = SnapshotTrigger(
            self.config.snapshot_entries, self.config.snapshot_bytes, base_index
        )
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        # membership: the configuration history of the log, and who we have heard of
        self._history = ConfigHistory(base_conf)
        self._history.scan(self._log.entries)
        self._known: set[NodeId] = set(voters) | self._history.nodes()
        # a joining node votes and campaigns only once the cluster's own log or snapshot
        # names it — never on the strength of the bootstrap list (it may be a wiped node)
        self._joining = join and not (
            (snapshot is not None and base_conf.is_member(node_id))
            or any(c.is_member(node_id) for _, c in self._history.entries)
        )
        self.conf_refused: dict[str, int] = {}
        """Refused :meth:`~.core.RaftCore.propose_conf_change` calls, per reason."""
        self._set_configuration()

        self._msgs: list[Message] = []
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
        self._read_only = ReadOnly()
        self._reads: list[ReadState] = []
        # counters a driver may export
        self.rejected: dict[str, int] = {}

    # ----------------------------------------------------------------- properties

    @property
    def log(self) -> list[Entry]:
        """The log from the snapshot point on: ``log[0]`` stands for the snapshot point
        (index and term of the last compacted entry, ``(0, 0)`` without a snapshot) and
        ``log[k]`` is the entry at ``snapshot_index + k``. Read it; do not change it."""
        return self._log.entries

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
        return self._log.last_index

    @property
    def snapshot_index(self) -> int:
        """Index of the last entry the snapshot covers (0 without a snapshot)."""
        return self._log.offset

    @property
    def first_index(self) -> int:
        """Index of the first entry still in the log (``snapshot_index + 1``)."""
        return self._log.offset + 1

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index``: the snapshot's term at the snapshot index, 0 for
        index 0, -1 when the entry is compacted away or beyond the log."""
        return self._log.term_at(index)

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` if the log still holds it (None when compacted or beyond)."""
        return self._log.entry(index)

    def hard_state(self) -> HardState:
        """The current durable state (term, vote, commit)."""
        return HardState(self._term, self.vote, self.commit)

    # ----------------------------------------------------------------- primitives

    def _send(self, m: Message) -> None:
        """Queue ``m`` for the next ``Ready``."""
        self._msgs.append(m)

    def _count(self, reason: str) -> None:
        """Count one refused message (or request) under ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _reject(self, reason: str, detail: str) -> NoReturn:
        """Count ``reason`` and raise :class:`ProtocolError`: the message changes nothing."""
        self._count(reason)
        raise ProtocolError(reason, detail)

    def _random_timeout(self) -> int:
        """A fresh election timeout in ticks, drawn from the injected RNG."""
        return self.rng.randrange(self.config.election_ticks, self.config.election_ticks_max)

    def _set_role(self, role: Role, leader: NodeId | None) -> None:
        """Take ``role`` under ``leader``; report it in ``Ready`` when either changed."""
        changed = role is not self._role or leader != self._leader
        self._role = role
        self._leader = leader
        if changed:
            self._role_changes.append(RoleChange(self.node_id, role, self._term, leader))

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        """Follow ``leader`` (None: unknown yet) at ``term``; unserved reads fail."""
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

    # Each role module implements one of these and another one calls it: a won election
    # (:mod:`.election`) makes a leader, a follower's TimeoutNow starts a campaign, and a
    # candidate that hears the leader of its term steps as a follower (:mod:`.follower`).

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        """Start an election (:mod:`.election`)."""
        raise NotImplementedError

    def _become_leader(self) -> None:
        """Take the lead after winning an election (:mod:`.leader`)."""
        raise NotImplementedError

    def _step_follower(self, m: Message) -> None:
        """Handle a message of the current term as follower (:mod:`.follower`)."""
        raise NotImplementedError

    def _compact_log_to(self, index: int, term: int) -> None:
        """Make ``(index, term)`` the log's snapshot point, keeping the entries after it."""
        self._log.compact_to(index, term)
        self._trigger.moved_to(index)

    # ----------------------------------------------------------------- reads

    def _deliver_read(self, ctx: Any, origin: NodeId | None, rid: int, index: int) -> None:
        """Hand a read point (-1: failed) to this node's caller or to the follower that asked."""
        if origin is None:
            self._reads.append(ReadState(ctx, index))
        else:
            self._send(ReadIndexResponse(self.node_id, origin, self._term, rid, index))

    def _refuse_read(self, m: ReadIndexRequest) -> None:
        """Only a leader gives read points: tell the follower that asked (index -1)."""
        self._send(ReadIndexResponse(self.node_id, m.src, self._term, m.ctx, -1))

    def _fail_reads(self) -> None:
        """Leadership is lost: every read this node accepted as leader fails."""
        for read in self._read_only.take_all():
            self._deliver_read(read.ctx, read.origin, read.rid, -1)

    def _fail_remote_reads(self) -> None:
        """The leader we asked is gone: our requests to it fail."""
        for ctx in self._read_only.abandon():
            self._reads.append(ReadState(ctx, -1))

    # ----------------------------------------------------------------- membership

    def _conf_change_pending(self) -> bool:
        """True while the latest configuration entry is not committed."""
        return self._history.current_index > self.commit

    def _on_log_configuration_changed(self) -> None:
        """A configuration entry was appended or truncated: the new one is in effect."""
        conf = self._history.current
        self._learn_nodes(conf.members)
        if self._history.entries and conf.is_member(self.node_id):
            self._joining = False  # a configuration entry names us
        self._set_configuration()

    def _learn_nodes(self, nodes: Sequence[NodeId]) -> None:
        """Accept messages from ``nodes`` from now on."""
        self._known.update(nodes)

    def _set_configuration(self) -> None:
        """Cache the configuration in effect; a leader tracks progress of its new members."""
        conf = self._history.current
        me = self.node_id
        self._conf = conf
        self._self_voter = me in conf.voters and not self._joining
        self._other_voters: tuple[NodeId, ...] = tuple(v for v in conf.voters if v != me)
        self.others: tuple[NodeId, ...] = tuple(n for n in conf.members if n != me)
        """The other members of the configuration in effect (voters, then learners)."""
        self.quorum = conf.quorum
        if self._role is Role.LEADER:
            # a new member is probed from the configuration entry that adds it (the last
            # one): the probe carries that entry, and a rejection backs off from there
            nxt = max(1, self.last_index)
            old = self.progress
            self.progress = {
                n: old[n] if n in old else Progress(match=0, next=nxt) for n in self.others
            }
