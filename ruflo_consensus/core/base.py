"""The sans-IO backend contract shared by the Raft, PBFT and CRDT cores.

A core is a plain object that owns protocol state and nothing else. A driver (the
deterministic simulator, the trio runtime) feeds it events and carries out its effects::

    core.propose(proposal)     # a client command arrives at this node
    core.step(message)         # a message from a peer arrives
    core.tick()                # one logical clock tick passed on this node

    if core.has_ready():
        ready = core.ready()   # take the effects accumulated since the last call
        storage.save(ready.persist)        # 1. persist (fsync) BEFORE sending anything
        for m in ready.messages: send(m)   # 2. send
        for c in ready.committed: apply(c) # 3. apply committed entries in order

The order matters: a vote or an acknowledgement that leaves before the state it
promises is durable can let a crash un-say it. ``docs/backend-contract.md`` describes how
Raft, PBFT and CRDT each fit this shape.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Capabilities",
    "CommandResult",
    "Committed",
    "ConfChange",
    "ConfChangeKind",
    "ConfChangeRefused",
    "ConsensusCore",
    "ConsensusError",
    "CoreFactory",
    "Entry",
    "FollowerProgress",
    "HardState",
    "LeadershipTransfer",
    "LogCompaction",
    "LogStatus",
    "MemberSet",
    "MembershipChanges",
    "Message",
    "NodeId",
    "NotLeader",
    "Persist",
    "Proposal",
    "ProposalDropped",
    "ProtocolError",
    "ReadIndexReads",
    "ReadState",
    "Ready",
    "RejectionCounts",
    "ReplicationProgress",
    "Role",
    "RoleChange",
    "Snapshot",
    "TransferRefused",
]

NodeId = str


class Role(enum.StrEnum):
    """What a node currently does in its protocol."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    # PBFT roles
    PRIMARY = "primary"
    BACKUP = "backup"
    VIEW_CHANGING = "view-changing"
    # CRDT: every node is a peer
    REPLICA = "replica"


class ConsensusError(Exception):
    """Base of the typed errors a core raises to its driver."""


class NotLeader(ConsensusError):
    """The node cannot order a proposal; ``leader`` is its best guess of who can (or None)."""

    def __init__(self, node: NodeId, leader: NodeId | None) -> None:
        super().__init__(f"{node} is not the leader (leader hint: {leader})")
        self.node = node
        self.leader = leader


class ProposalDropped(ConsensusError):
    """A proposal was refused for back-pressure or because the node is stepping down."""


class TransferRefused(ConsensusError):
    """A leadership transfer was refused (not leader, unknown target, target behind)."""


class ConfChangeRefused(ConsensusError):
    """A membership change was refused; nothing changed.

    ``reason`` is a short counter key: ``"not-leader"`` (``leader`` is the hint),
    ``"change-in-progress"``, ``"term-not-committed"``, ``"transfer-in-progress"``,
    ``"unknown-node"``, ``"already-member"``, ``"no-voters"``, ``"learner-behind"``,
    ``"bad-node"``, ``"bad-kind"`` or ``"too-many-uncommitted"``.
    """

    def __init__(self, reason: str, detail: str, leader: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.leader = leader


class ProtocolError(ConsensusError):
    """A message was rejected (malformed, from an unknown node, inconsistent); state unchanged.

    ``reason`` is a short counter key (``"unknown-sender"``, ``"bad-field"``, …) that drivers
    count per reason.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Proposal:
    """A client command as a core carries it: ``(client, seq)`` makes retries idempotent."""

    client: str | None
    seq: int
    command: Any


class ConfChangeKind(enum.StrEnum):
    """The single-server membership changes a Raft leader can make."""

    ADD_LEARNER = "add-learner"
    PROMOTE_LEARNER = "promote-learner"
    ADD_VOTER = "add-voter"
    REMOVE_VOTER = "remove-voter"
    REMOVE_LEARNER = "remove-learner"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change as a log entry carries it: what changed, and the result.

    ``kind``/``node`` say what the operator asked for; ``voters``/``learners`` are the
    whole configuration after the change, so that every configuration entry stands on
    its own (a node never has to replay earlier ones to know who votes).
    """

    kind: ConfChangeKind
    node: NodeId
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One position of a totally ordered log.

    ``proposal`` is ``None`` for an entry the protocol itself needs: Raft's no-op at the
    start of a term, or a membership change, which then rides in ``conf``. Drivers
    apply only entries with a proposal; a ``conf`` entry changes the cluster, not the
    state machine.
    """

    term: int
    index: int
    proposal: Proposal | None
    conf: ConfChange | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """An entry the driver must apply now, in the order given, exactly once."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of a proposal that a core executed itself (CRDT: applied locally).

    Totally ordered backends leave results to the driver, which applies ``committed``
    entries to the state machine; a backend without a log reports them here.
    """

    proposal: Proposal
    value: Any


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read point: serve the read for ``ctx`` once ``index`` is applied.

    ``index`` is -1 when the read could not be confirmed (leadership was lost); the
    driver then retries elsewhere.
    """

    ctx: Any
    index: int


@dataclass(frozen=True, slots=True)
class RoleChange:
    """A node's role, term/view or known leader changed."""

    node: NodeId
    role: Role
    term: int
    leader: NodeId | None


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash besides the log: current term/view, vote, commit point."""

    term: int
    vote: NodeId | None
    commit: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state machine snapshot and the log position and membership it covers.

    ``index``/``term`` are those of the last entry the snapshot includes; ``voters`` and
    ``learners`` are the cluster configuration as of that entry; ``data`` is the state
    machine's (and session table's) serialised state.
    """

    index: int
    term: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    data: bytes


@dataclass(slots=True)
class Persist:
    """A change to durable state: store a snapshot, truncate the log, then append entries.

    ``snapshot`` (when not None) is stored first: it replaces every entry with index ≤
    ``snapshot.index`` (a compaction, or a snapshot installed from the leader).
    ``truncate_from`` (when not None) then removes every entry with index ≥ it before
    ``entries`` are appended. ``hard_state`` (when not None) replaces the stored one.
    ``state`` (when not None) is a backend's opaque durable state that replaces the stored
    one — the CRDT core's encoded document, for instance. All of it must be durable, as
    one atomic change, before the same ``Ready``'s messages leave.
    """

    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: list[Entry] = field(default_factory=list)
    state: bytes | None = None
    snapshot: Snapshot | None = None

    def is_empty(self) -> bool:
        """True when there is nothing to write."""
        return (
            self.hard_state is None
            and self.truncate_from is None
            and not self.entries
            and self.state is None
            and self.snapshot is None
        )


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every protocol message: who sent it and to whom."""

    src: NodeId
    dst: NodeId


@dataclass(slots=True)
class Ready:
    """The effects a core produced since the last :meth:`ConsensusCore.ready` call.

    The driver must carry them out in this order: ``persist``, then ``messages``, then
    restore the state machine from ``snapshot`` (when not None), then ``committed`` (in
    list order), and report ``results``, ``role_changes`` and ``dropped`` to whoever
    watches. ``snapshot_request`` (when not None) asks the driver to snapshot its state
    machine once it has applied through that index and hand the bytes back (Raft:
    :meth:`~ruflo_consensus.core.raft.RaftCore.compact`); a driver may ignore it. An empty
    ``Ready`` means nothing to do.
    """

    persist: Persist = field(default_factory=Persist)
    messages: list[Message] = field(default_factory=list)
    committed: list[Committed] = field(default_factory=list)
    role_changes: list[RoleChange] = field(default_factory=list)
    dropped: list[tuple[Proposal, str]] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    snapshot: Snapshot | None = None
    snapshot_request: int | None = None

    def is_empty(self) -> bool:
        """True when the driver has nothing to do."""
        return (
            self.snapshot is None
            and self.snapshot_request is None
            and self.persist.is_empty()
            and not self.messages
            and not self.committed
            and not self.role_changes
            and not self.dropped
            and not self.results
            and not self.reads
        )


@runtime_checkable
class ConsensusCore(Protocol):
    """The interface every sans-IO core implements (Raft, PBFT, CRDT)."""

    node_id: NodeId

    @property
    def role(self) -> Role:
        """The node's current role."""
        ...

    @property
    def term(self) -> int:
        """Raft term, PBFT view, or 0 for CRDT."""
        ...

    @property
    def leader(self) -> NodeId | None:
        """Who the node believes orders proposals now (None when unknown or not applicable)."""
        ...

    def propose(self, proposal: Proposal) -> None:
        """Offer a client command; raise :class:`NotLeader` or :class:`ProposalDropped`."""
        ...

    def step(self, message: Message) -> None:
        """Handle one message from a peer; raise :class:`ProtocolError` to reject it."""
        ...

    def tick(self) -> None:
        """Advance this node's logical clock by one tick."""
        ...

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return effects."""
        ...

    def ready(self) -> Ready:
        """Take the pending effects (the core forgets them once returned)."""
        ...


class CoreFactory(Protocol):
    """Builds a node's core from what its storage returned, at start and on every restart.

    Both drivers (the simulator and the trio runtime) take one, so a test can run a
    deliberately broken core, or a user a subclass, under either of them. ``voters`` are
    the bootstrap voters; ``config`` is the backend's own configuration (a
    :class:`~ruflo_consensus.core.raft.RaftConfig` for Raft); ``join`` starts a node that is
    not one of them as a spare that waits to be added.
    """

    def __call__(
        self,
        node_id: NodeId,
        voters: Sequence[NodeId],
        rng: random.Random,
        config: Any,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        *,
        snapshot: Snapshot | None = None,
        join: bool = False,
    ) -> ConsensusCore:
        """Return the core for ``node_id``, restored from the given stored state."""
        ...


# ---------------------------------------------------------------------- capabilities
#
# What a core offers beyond the contract above. Each is a small runtime-checkable
# protocol; a driver resolves them once, when it builds the core
# (:meth:`Capabilities.of`), and then calls them through typed references, so that a
# core without one is a clear ``None`` at one place rather than a probe at every use.
# ``docs/backend-contract.md`` lists which core has which.


@runtime_checkable
class ReadIndexReads(Protocol):
    """Linearizable reads confirmed by the core (Raft's ReadIndex, or a lease).

    ``read_index(ctx)`` asks for a read point; it arrives later as a :class:`ReadState`
    in :attr:`Ready.reads`, and the driver serves the read once it has applied through
    ``ReadState.index``. Raises :class:`NotLeader` when nobody can confirm it now.
    """

    def read_index(self, ctx: Any) -> None:
        """Ask for a read point for ``ctx`` (answered in a later ``Ready.reads``)."""
        ...


@runtime_checkable
class LogCompaction(Protocol):
    """A log the driver may compact: the answer to :attr:`Ready.snapshot_request`."""

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        """Take ``data`` (the machine's snapshot after applying exactly through ``index``),
        drop the log through ``index``; the snapshot, or None when already compacted."""
        ...


@runtime_checkable
class LeadershipTransfer(Protocol):
    """A leader that can hand leadership to a chosen voter."""

    def transfer_leadership(self, target: NodeId) -> None:
        """Start handing leadership to ``target``; raise :class:`TransferRefused` if not."""
        ...


class MemberSet(Protocol):
    """A cluster configuration: who votes and who only receives the log."""

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """The voting members."""
        ...

    @property
    def learners(self) -> tuple[NodeId, ...]:
        """The members that receive the log without voting."""
        ...


@runtime_checkable
class MembershipChanges(Protocol):
    """Single-server membership changes made through the log (Raft's, see docs/raft.md)."""

    @property
    def configuration(self) -> MemberSet:
        """The configuration in effect (the latest in the log, committed or not)."""
        ...

    @property
    def conf_index(self) -> int:
        """The log index of the configuration in effect (0 for the bootstrap one)."""
        ...

    @property
    def is_voter(self) -> bool:
        """True when this node votes in the configuration in effect (a spare still
        joining does not)."""
        ...

    @property
    def commit(self) -> int:
        """The commit index (a configuration at or below it is committed)."""
        ...

    def propose_conf_change(self, kind: ConfChangeKind | str, node: NodeId) -> int:
        """As leader, append a change; its log index. Raises :class:`ConfChangeRefused`."""
        ...

    def configuration_at(self, index: int) -> MemberSet:
        """The configuration in effect as of log index ``index``."""
        ...

    def entry(self, index: int) -> Entry | None:
        """The log entry at ``index`` while the log still holds it."""
        ...


@runtime_checkable
class LogStatus(Protocol):
    """Positions in a totally ordered log, for a driver's status report."""

    @property
    def commit(self) -> int:
        """The highest index known committed."""
        ...

    @property
    def last_index(self) -> int:
        """The index of the last entry in the log."""
        ...

    @property
    def snapshot_index(self) -> int:
        """The last index the snapshot covers (0 without one)."""
        ...


class FollowerProgress(Protocol):
    """What a leader knows of one member's log."""

    @property
    def match(self) -> int:
        """The highest index known replicated on that member."""
        ...


@runtime_checkable
class ReplicationProgress(Protocol):
    """A leader's view of how far each member's log has caught up."""

    @property
    def progress(self) -> Mapping[NodeId, FollowerProgress]:
        """Per member (on a leader; empty or stale elsewhere)."""
        ...


@runtime_checkable
class RejectionCounts(Protocol):
    """Messages the core refused (:class:`ProtocolError`), counted per reason."""

    @property
    def rejected(self) -> Mapping[str, int]:
        """Reason -> count."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The capabilities of one core, each the core itself (typed) or None.

    Resolve them once with :meth:`of` when the core is built; a driver then asks
    ``caps.transfer is None`` instead of probing the core at every call.
    """

    reads: ReadIndexReads | None = None
    compaction: LogCompaction | None = None
    transfer: LeadershipTransfer | None = None
    membership: MembershipChanges | None = None
    log: LogStatus | None = None
    progress: ReplicationProgress | None = None
    counters: RejectionCounts | None = None

    @classmethod
    def of(cls, core: object) -> Capabilities:
        """What ``core`` offers (``isinstance`` on the protocols above, checked once)."""
        return cls(
            reads=core if isinstance(core, ReadIndexReads) else None,
            compaction=core if isinstance(core, LogCompaction) else None,
            transfer=core if isinstance(core, LeadershipTransfer) else None,
            membership=core if isinstance(core, MembershipChanges) else None,
            log=core if isinstance(core, LogStatus) else None,
            progress=core if isinstance(core, ReplicationProgress) else None,
            counters=core if isinstance(core, RejectionCounts) else None,
        )
