"""The trio driver: one sans-IO core run as a real node on real sockets.

A :class:`Node` owns a core, its storage, a :class:`~ruflo_consensus.statemachine.SessionTable`
around the user's state machine and a :class:`~.transport.Transport`. :meth:`Node.run`
starts, in one nursery:

* the **transport** — the websocket listener, one outbound link per direct neighbour, one
  receive task per inbound connection;
* the **tick task** — ``core.tick()`` every ``tick_ms`` on trio's clock;
* the **ready task** — takes each ``Ready`` and carries it out in the contract's order:
  persist (``storage.save``, fsynced, in a worker thread so frames keep arriving and the
  next ``Ready`` batches them), *then* send, then hand committed entries and read points
  to the apply task. One exception, Raft's (§10.2.1 of Ongaro's thesis): a leader's
  ``AppendEntries``/``InstallSnapshot`` leave *before* its own fsync, so the followers'
  fsyncs overlap the leader's (``[runtime] parallel_leader_append``). It is safe because
  Readies are carried out one after the other: everything that acts on an entry being
  committed — applying it, answering its client, a ``leader_commit`` that covers it —
  comes in a later ``Ready``, after this one's fsync returned;
* the **apply task** — applies committed entries through the session table, in order,
  exactly once, wakes the clients waiting for them and serves confirmed reads. It also
  restores the state machine (and session table) from a snapshot the core hands over
  (``Ready.snapshot``: installed from the leader, or the stored one at start-up), and
  answers ``Ready.snapshot_request`` by snapshotting both and calling the core's
  ``compact`` once it has applied through the requested index;
* the **metrics server**, when the spec gives the node a ``metrics`` address: Prometheus
  metrics over HTTP (:mod:`.metrics`; :attr:`Node.metrics` holds the node's registry).

Cancelling the nursery stops the node. Any task that raises takes the whole node down
with the exception (trio's nursery semantics): a node is never half-alive.

Bad input never crashes a node: every frame is size-checked, decoded, verified and
replay-checked before it reaches the core, and each refusal is counted per reason in
:attr:`Node.rejected`.

**Where the rest lives.** The overlay (next hops around down links, link-state
flooding, relays) is :mod:`.routing`; submits and reads in flight, and the forwarding of
a follower's submit to the leader, :mod:`.forwarding`; membership changes
:mod:`.membership`; ``/client`` connections :mod:`.client_server`. They use the node's
public interfaces of :mod:`.services`, never its private members. What the node needs
of the core beyond the contract (reads, compaction, transfer, membership, status) it
resolves once into :attr:`Node.capabilities`; a missing one is a typed
:class:`~.errors.CapabilityMissing` where it is asked for (``docs/backend-contract.md``).

**Membership.** A spare of the spec (``join = true``) starts its core with ``join=True``;
every node of the spec is linked and relays, member or not, but a node outside the
configuration refuses submits and reads with :class:`NotMemberError`.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVarTuple

import trio
from trio_websocket import WebSocketConnection

from ..codec import DecodeError, decode_message, encode_message
from ..core.base import (
    Capabilities,
    Committed,
    ConfChangeKind,
    ConsensusCore,
    CoreFactory,
    Message,
    NodeId,
    Persist,
    ProtocolError,
    Ready,
    Role,
    RoleChange,
    Snapshot,
)
from ..core.raft import AppendEntries, InstallSnapshot, RaftCoreFactory
from ..identity import Envelope, NodeIdentity, NonceSource, ReplayWindow
from ..statemachine import SessionTable, StateMachine
from ..storage import FileStorage, MemoryStorage, RaftStorage
from .client_server import serve_client
from .errors import CapabilityMissing, NodeError, NotLeaderError, NotMemberError, SubmitTimeout
from .forwarding import KIND_FORWARD, KIND_FORWARD_REPLY, PendingReads, Submissions
from .membership import (
    KIND_CHANGE,
    KIND_CHANGE_REPLY,
    MembershipAdmin,
    configuration_map,
    member_role,
)
from .metrics import NodeMetrics, serve_metrics
from .routing import Router
from .spec import ClusterSpec

__all__ = [
    "KIND_CONSENSUS",
    "CapabilityMissing",
    "CoreFactory",
    "Node",
    "NodeError",
    "NotLeaderError",
    "NotMemberError",
    "SubmitTimeout",
    "default_core_factory",
]

log = logging.getLogger("ruflo_consensus.runtime")

KIND_CONSENSUS = 0  # payload: a codec frame (a protocol message)

_LEADER_MESSAGES = (AppendEntries, InstallSnapshot)  # sent before the leader's own fsync

Ts = TypeVarTuple("Ts")


default_core_factory = RaftCoreFactory()
"""Builds a :class:`RaftCore` from what storage returned (snapshot, hard state, log).

The node passes the bootstrap voters (:attr:`ClusterSpec.voters`) and starts a node that
is not one of them as a spare, with ``join=True`` — on every start: the core itself
notices when its stored log or snapshot already names it (it has joined) and then votes
and campaigns as its configuration says."""


class Node:
    """One consensus node on real sockets. See the module docstring.

    ``peer_keys`` maps every node id of the spec to its Ed25519 public key,
    ``client_keys`` every client allowed on ``/client`` to its own. ``storage``
    defaults to a :class:`FileStorage` in the spec's data folder for this node, or memory
    when the spec has none. ``relay_hook`` (tests only) may rewrite frames this node
    relays, to play a malicious relay.

    A node satisfies :class:`~.services.NodeServices` and :class:`~.services.ClientAPI`,
    the interfaces its membership, forwarding and client-server modules use.
    """

    def __init__(
        self,
        spec: ClusterSpec,
        identity: NodeIdentity,
        peer_keys: dict[str, bytes],
        state_machine: StateMachine,
        *,
        storage: RaftStorage | None = None,
        core_factory: CoreFactory = default_core_factory,
        seed: int | None = None,
        relay_hook: Callable[[bytes], bytes] | None = None,
        client_keys: dict[str, bytes] | None = None,
        rejoin: bool = False,
    ) -> None:
        node_id = identity.node_id
        spec.check_node(node_id)
        missing = [n for n in spec.ids if n not in peer_keys]
        if missing:
            raise NodeError(f"no public key for {', '.join(missing)}")
        if peer_keys[node_id] != identity.public_key:
            raise NodeError(f"the key file of {node_id} does not match its manifest")
        self.spec = spec
        self.node_id = node_id
        self.identity = identity
        self.peer_keys = dict(peer_keys)
        self.client_keys = dict(client_keys or {})
        clash = set(self.client_keys) & set(self.peer_keys)
        if clash:
            raise NodeError(f"client ids that are node ids: {', '.join(sorted(clash))}")
        self.rng = random.Random(seed if seed is not None else secrets.randbits(64))
        if storage is None:
            data_dir = spec.data_dir(node_id)
            storage = (
                MemoryStorage()
                if data_dir is None
                else FileStorage(str(data_dir), fsync=spec.runtime.fsync)
            )
        self.storage = storage
        self._persist_in_thread = isinstance(storage, FileStorage)
        self._early_append = spec.runtime.parallel_leader_append
        stored = storage.load()
        self._marker = spec.state_marker(node_id)
        empty = (
            stored.hard_state is None
            and stored.snapshot is None
            and not stored.entries
            and stored.state is None
        )
        self.rejoining = empty and self._marker.exists()
        """This node saved state once and lost it: it starts as a spare (see below)."""
        if self.rejoining and not rejoin:
            storage.close()
            raise NodeError(
                f"{node_id} lost its saved state (storage empty, {self._marker} exists): it "
                "may have voted and acknowledged entries, so it will not start as a voter. "
                f"Restore its data, or: cluster remove SPEC {node_id}; start it with "
                f"--rejoin; cluster add SPEC {node_id}"
            )
        self._marker_pending = empty and not self.rejoining
        self.table = SessionTable(state_machine)
        self.applied = 0
        try:
            self.core: ConsensusCore = core_factory(
                node_id,
                spec.voters,
                random.Random(self.rng.getrandbits(64)),
                spec.raft,
                stored.hard_state,
                stored.entries,
                snapshot=stored.snapshot,
                join=node_id not in spec.voters or self.rejoining,
            )
        except ValueError as exc:  # a snapshot of another membership, a gap in the log
            raise NodeError(f"cannot start from the stored state: {exc}") from None
        self.capabilities = Capabilities.of(self.core)
        """What the core offers beyond the contract, resolved once, here."""
        self.rejected: Counter[str] = Counter()
        self.delivered = 0
        self.client_window = ReplayWindow(spec.runtime.replay_max_age_s)
        self.nonces = NonceSource()
        self.router = Router(
            node_id,
            spec,
            identity,
            self.nonces,
            self.peer_keys,
            self.rejected,
            self.rng,
            self._deliver,
            self._serve_client,
            relay_hook=relay_hook,
        )
        self.transport = self.router.transport
        self.window = self.router.window  # the replay window of frames from other nodes
        self.max_frame = spec.runtime.max_frame
        self.tick_s = spec.raft.tick_ms / 1000
        self.retry_s = max(0.2, 2 * spec.raft.election_timeout_max_ms / 1000)
        """How long a waiting request waits before it re-checks who leads and re-sends."""
        self.role_changes: list[RoleChange] = []
        self._wake_event = trio.Event()
        self._role_event = trio.Event()
        self._applied_event = trio.Event()
        # the ready task hands each Ready with work for the apply task on, in order
        self._apply_send, self._apply_recv = trio.open_memory_channel[Ready](1024)
        self.snapshots_taken = 0
        self.snapshots_restored = 0
        lanes = f"{node_id}/{self.nonces.boot.hex()}"
        self.submissions = Submissions(self, lanes, spec.runtime.max_sessions)
        self.pending_reads = PendingReads(self, lambda query: self.table.machine.apply(query))
        self.membership = MembershipAdmin(self)
        self._nursery: trio.Nursery | None = None
        self.started = trio.Event()
        self.port: int | None = None
        self.proposals_dropped: Counter[str] = Counter()
        """Proposals the core dropped after taking them (``Ready.dropped``), per reason."""
        self.metrics = NodeMetrics(self)
        """This node's Prometheus registry and histograms (:mod:`.metrics`)."""
        self.metrics_port: int | None = None
        """The port metrics are served on (None: the spec gives this node no address)."""

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``nursery.start(node.run)`` returns once it listens."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.port = await nursery.start(self.transport.run)
                address = self.spec.metrics.get(self.node_id)
                if address is not None:
                    self.metrics_port = await nursery.start(
                        serve_metrics, self.metrics, address.host, address.port
                    )
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._ready_loop)
                nursery.start_soon(self._apply_loop)
                nursery.start_soon(self._sweeper)
                nursery.start_soon(self.router.announce_loop)
                self.wake()
                self.started.set()
                log.info(
                    "%s listening on %s", self.node_id, self.spec.endpoints[self.node_id].url()
                )
                task_status.started(self)
        finally:
            self._nursery = None
            self.metrics_port = None
            with trio.CancelScope(shield=True):
                self.storage.close()

    def wake(self) -> None:
        """The core may have effects: let the ready task take them."""
        self._wake_event.set()

    def spawn(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> bool:
        """Start ``fn(*args)`` in the node's nursery (it dies with the node); False when
        the node is not running (nothing started)."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    async def _sweeper(self) -> None:
        """Poke every waiting client now and then: lost forwards are re-sent, lost read
        confirmations asked again (a waiter otherwise sleeps until it is resolved)."""
        while True:
            await trio.sleep(self.submissions.sweep_s)
            self.submissions.poke_all()
            self.pending_reads.poke_all()

    async def _tick_loop(self) -> None:
        deadline = trio.current_time()
        while True:
            deadline += self.tick_s
            now = trio.current_time()
            if deadline < now - 10 * self.tick_s:
                deadline = now  # the loop was starved: do not fire a burst of ticks
            await trio.sleep_until(deadline)
            self.core.tick()
            if self.core.has_ready():
                self.wake()

    async def _ready_loop(self) -> None:
        core = self.core
        while True:
            await self._wake_event.wait()
            self._wake_event = trio.Event()
            while core.has_ready():
                rd = core.ready()
                messages = rd.messages
                if not rd.persist.is_empty():
                    if self._early_append:  # see the module docstring
                        later = []
                        for m in messages:
                            if isinstance(m, _LEADER_MESSAGES):
                                self._send_message(m)
                            else:
                                later.append(m)
                        messages = later
                    if self._persist_in_thread:
                        seconds = await trio.to_thread.run_sync(self._timed_save, rd.persist)
                        self.metrics.fsync.observe(seconds)
                    else:
                        self.storage.save(rd.persist)
                    if self._marker_pending:
                        self._mark_initialised()
                for m in messages:
                    self._send_message(m)
                for rc in rd.role_changes:
                    self._on_role_change(rc)
                for proposal, reason in rd.dropped:
                    self.proposals_dropped[str(reason)] += 1
                    if proposal.client is not None:
                        self.submissions.poke(proposal.client, proposal.seq)
                if (
                    rd.snapshot is not None
                    or rd.committed
                    or rd.reads
                    or rd.results
                    or rd.snapshot_request is not None
                ):
                    await self._apply_send.send(rd)

    def _timed_save(self, persist: Persist) -> float:
        """``storage.save`` (one WAL record and its fsync), in a worker thread: seconds."""
        start = time.perf_counter()
        self.storage.save(persist)
        return time.perf_counter() - start

    def _mark_initialised(self) -> None:
        """This node's first state is saved (before any message that tells of it leaves):
        write the marker that makes a later start from empty storage refuse to vote."""
        self._marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._marker.with_name(self._marker.name + ".tmp")
        tmp.write_text(f"{self.node_id} saved state; an empty storage later means it lost it\n")
        tmp.replace(self._marker)
        self._marker_pending = False

    async def _apply_loop(self) -> None:
        async for work in self._apply_recv:
            if work.snapshot is not None:
                self._restore(work.snapshot)
            if work.committed:
                start = time.perf_counter()
                for c in work.committed:
                    self._apply(c)
                self.metrics.apply.observe(time.perf_counter() - start)
            if work.snapshot_request is not None:
                self._compact(work.snapshot_request)
            for r in work.results:
                p = r.proposal
                if p.client is not None:
                    self.submissions.resolve(p.client, p.seq, r.value)
            self.pending_reads.confirm(work.reads)
            self.pending_reads.serve(self.applied)
            if work.committed or work.snapshot is not None:
                self._applied_event.set()
                self._applied_event = trio.Event()

    def _restore(self, snapshot: Snapshot) -> None:
        """Replace the machine and session table by a snapshot's (installed or stored).

        A snapshot that does not restore is a bug elsewhere (it was taken by a replica of
        the same machine): the ``CommandError`` takes the node down loudly.
        """
        self.table.restore(snapshot.data)
        self.applied = snapshot.index
        self.snapshots_restored += 1
        log.info("%s restored a snapshot through index %d", self.node_id, snapshot.index)
        # submits that the snapshot covers are answered from the restored session table
        self.submissions.answer_from(self.table.sessions)

    def _compact(self, index: int) -> None:
        """The core asked for a snapshot through ``index``: take it and hand it back."""
        compaction = self.capabilities.compaction
        if compaction is None or self.applied != index:
            return  # (the request is a suggestion; the next one comes with more entries)
        if compaction.compact(index, self.table.snapshot()) is not None:
            self.snapshots_taken += 1
            self.wake()

    def _apply(self, c: Committed) -> None:
        entry = c.entry
        self.applied = entry.index
        p = entry.proposal
        if p is None:
            return
        result = self.table.apply(p.client, p.seq, p.command)
        if p.client is not None:
            self.submissions.resolve(p.client, p.seq, result)

    def _on_role_change(self, rc: RoleChange) -> None:
        self.role_changes.append(rc)
        del self.role_changes[:-100]
        log.info("%s is %s in term %d (leader %s)", rc.node, rc.role, rc.term, rc.leader)
        self.submissions.poke_all()
        self.pending_reads.poke_all()
        self._role_event.set()
        self._role_event = trio.Event()

    async def wait_role_change(self, timeout: float) -> None:
        """Return at the core's next role (or leader) change, or after ``timeout`` s."""
        with trio.move_on_after(timeout):
            await self._role_event.wait()

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Wait until this node has applied ``index`` (tests: a restarted node caught up);
        ``trio.TooSlowError`` after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while self.applied < index:
                await self._applied_event.wait()

    # ------------------------------------------------------------------ frames

    def _send_message(self, m: Message) -> None:
        self.send_envelope(m.dst, KIND_CONSENSUS, encode_message(m))

    def send_envelope(self, dst: NodeId, kind: int, payload: bytes) -> None:
        """Sign ``payload`` as an envelope of ``kind`` for ``dst`` and send it to the next
        hop on the overlay (dropped and counted ``unroutable`` when there is none)."""
        self.router.send(dst, kind, payload)

    def _deliver(self, env: Envelope) -> None:
        """A checked envelope addressed to this node: hand it to the owner of its kind."""
        if env.kind == KIND_CONSENSUS:
            self._step(env.sender, env.payload)
        elif env.kind == KIND_FORWARD:
            self.submissions.on_forward(env.sender, env.payload)
        elif env.kind == KIND_FORWARD_REPLY:
            self.submissions.on_reply(env.payload)
        elif env.kind == KIND_CHANGE:
            self.membership.on_change(env.sender, env.payload)
        elif env.kind == KIND_CHANGE_REPLY:
            self.membership.on_reply(env.payload)
        else:
            self.rejected["unknown-kind"] += 1

    def _step(self, sender: str, payload: bytes) -> None:
        try:
            message = decode_message(payload, self.max_frame)
        except DecodeError as exc:
            self.rejected[exc.reason] += 1
            return
        if message.src != sender:
            self.rejected["sender-mismatch"] += 1
            return
        try:
            self.core.step(message)
        except ProtocolError as exc:
            self.rejected[exc.reason] += 1
            return
        self.delivered += 1
        if self.core.has_ready():
            self.wake()

    async def _serve_client(self, ws: WebSocketConnection) -> None:
        await serve_client(self, ws)

    # ------------------------------------------------------------------ client API

    async def submit(self, command: Any, *, timeout: float | None = None) -> Any:
        """Replicate ``command`` and return its result once applied (here or at the leader).

        Works on any node: a follower forwards to the leader. Retries across leader
        changes are exactly-once (each call holds a session lane ``(client, seq)``). A
        command the state machine rejects returns a :class:`CommandRejected`. Raises
        :class:`SubmitTimeout` when no answer comes in ``timeout`` seconds (default: the
        spec's ``submit_timeout_s``; a long timeout fires up to one election timeout late,
        when the node's sweeper next wakes the waiter). At most ``max_sessions`` submits
        are in flight per node; more wait for a free lane (back-pressure).
        """
        limit = self.spec.runtime.submit_timeout_s if timeout is None else timeout
        start = time.perf_counter()
        outcome = "error"
        try:
            lane = await self.submissions.take_lane(limit)
            try:
                lane.seq += 1
                self._check_member()
                result = await self.submissions.submit_as(lane.client, lane.seq, command, limit)
            finally:
                self.submissions.return_lane(lane)
            outcome = "ok"
            return result
        except SubmitTimeout:
            outcome = "timeout"
            raise
        finally:
            self.metrics.request("submit", outcome, time.perf_counter() - start)

    async def submit_as(self, client: str, seq: int, command: Any, timeout: float) -> Any:
        """Like :meth:`submit`, in the caller's session lane ``(client, seq)``: a retry of
        the same lane (on any node) is applied once. The client server uses it for
        clients that name their lane; ``timeout`` is in seconds."""
        start = time.perf_counter()
        outcome = "error"
        try:
            self._check_member()
            result = await self.submissions.submit_as(client, seq, command, timeout)
            outcome = "ok"
            return result
        except SubmitTimeout:
            outcome = "timeout"
            raise
        finally:
            self.metrics.request("submit", outcome, time.perf_counter() - start)

    async def read(self, query: Any, *, timeout: float | None = None) -> Any:
        """A linearizable read: ``query`` runs on this node's machine once it has applied
        everything committed before the read started (Raft ReadIndex, on any node).

        ``query`` must not change state (for the KV machine: ``{"op": "get", ...}``). On a
        core without :class:`~ruflo_consensus.core.base.ReadIndexReads` (a backend without
        ordering, CRDT) the query runs on the local machine at once.
        """
        limit = self.spec.runtime.submit_timeout_s if timeout is None else timeout
        start = time.perf_counter()
        outcome = "error"
        try:
            self._check_member()
            reads = self.capabilities.reads
            if reads is None:
                result = self.table.machine.apply(query)
            else:
                try:
                    with trio.fail_after(limit):
                        result = await self.pending_reads.read(reads, query)
                except trio.TooSlowError:
                    outcome = "timeout"
                    raise SubmitTimeout(f"read not confirmed within {limit} s") from None
            outcome = "ok"
            return result
        finally:
            self.metrics.request("read", outcome, time.perf_counter() - start)

    def transfer_leadership(self, target: NodeId) -> None:
        """Ask this node, the leader, to hand leadership to ``target`` (a caught-up voter).

        Raises :class:`NotLeaderError` on a node that does not lead,
        :class:`~ruflo_consensus.core.base.TransferRefused` when the core refuses, and
        :class:`~.errors.CapabilityMissing` on a core without leadership transfer.
        """
        transfer = self.capabilities.transfer
        if transfer is None:
            raise CapabilityMissing(type(self.core).__name__, "leadership transfer")
        if self.core.role is not Role.LEADER:
            raise NotLeaderError(self.core.leader)
        transfer.transfer_leadership(target)
        self.wake()

    async def change_membership(
        self, kind: ConfChangeKind | str, node_id: NodeId, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Change the cluster's membership by one server; return the new configuration.

        ``kind`` is ``"add-learner"``, ``"promote-learner"``, ``"remove-voter"`` or
        ``"remove-learner"`` (a :class:`~ruflo_consensus.core.base.ConfChangeKind` works
        too; ``"add-voter"`` is refused with ``learner-first``). Works on any node: a
        follower forwards the change to the leader. Returns once the configuration entry
        is committed and applied on the node that made it, as ``{"voters": [...],
        "learners": [...], "conf_index": n, "conf_committed": True}``.

        A refused change raises :class:`~ruflo_consensus.core.base.ConfChangeRefused`
        (nothing changed; ``.reason`` says why: ``already-member``, ``not-in-spec``, …;
        see :mod:`.membership`); transient refusals are retried until ``timeout``
        (default ``submit_timeout_s``), then :class:`SubmitTimeout` (the change may or
        may not have been made: look at :meth:`status`). A core without membership
        changes raises :class:`~.errors.CapabilityMissing`.
        """
        limit = self.spec.runtime.submit_timeout_s if timeout is None else timeout
        deadline = trio.current_time() + limit
        with trio.move_on_after(limit):
            return await self.membership.change(kind, node_id, deadline - 0.05 * limit)
        raise SubmitTimeout(f"membership change {kind} {node_id} not done within {limit} s")

    def _votes(self) -> bool:
        """True when the core votes (a voter of its configuration that is not joining)."""
        membership = self.capabilities.membership
        # a core without membership changes has a fixed set of voters: this node votes
        return membership is None or membership.is_voter

    @property
    def member_role(self) -> str:
        """``"voter"``, ``"learner"`` or ``"none"`` in the configuration in effect here."""
        return member_role(self.capabilities.membership, self.node_id)

    def _check_member(self) -> None:
        """Raise :class:`NotMemberError` on a non-leader outside the configuration."""
        if self.member_role == "none" and self.core.role is not Role.LEADER:
            raise NotMemberError(
                f"{self.node_id} is not a member of the cluster's configuration; ask another node"
            )

    # ------------------------------------------------------------------ status

    @property
    def role(self) -> Role:
        """The core's role."""
        return self.core.role

    @property
    def leader(self) -> NodeId | None:
        """Who the core believes leads."""
        return self.core.leader

    @property
    def relayed(self) -> int:
        """Frames for other nodes this node passed on (:attr:`.routing.Router.relayed`)."""
        return self.router.relayed

    @property
    def unroutable(self) -> int:
        """Frames this node sent that had no route (:attr:`.routing.Router.unroutable`)."""
        return self.router.unroutable

    def status(self) -> dict[str, Any]:
        """The spec's ``backend``, role, term, leader, commit/applied indexes, link health,
        rejection counts and membership: ``member`` (this node's
        ``voter``/``learner``/``none``), ``voters``, ``learners``, ``conf_index``,
        ``conf_committed`` as this node sees them, and on a leader ``progress`` (each
        member's highest replicated index). Fields a core has no capability for are None
        (``commit``, ``last_index``, ``snapshot_index``) or left out (membership,
        ``progress``)."""
        core, caps = self.core, self.capabilities
        rejected = Counter(self.rejected)
        dropped = Counter(self.proposals_dropped)
        if self.submissions.refused:
            dropped["refused"] += self.submissions.refused
        if caps.counters is not None:
            rejected.update(caps.counters.rejected)
        positions = caps.log
        out: dict[str, Any] = {
            "id": self.node_id,
            "backend": self.spec.backend,
            "role": str(core.role),
            "term": core.term,
            "leader": core.leader,
            "commit": None if positions is None else positions.commit,
            "last_index": None if positions is None else positions.last_index,
            "applied": self.applied,
            "snapshot_index": None if positions is None else positions.snapshot_index,
            "snapshots_taken": self.snapshots_taken,
            "snapshots_restored": self.snapshots_restored,
            "relayed": self.relayed,
            "delivered": self.delivered,
            "received": self.transport.received,
            "proposed": self.submissions.proposed,
            "proposals_dropped": dict(sorted(dropped.items())),
            "unroutable": self.unroutable,
            **self.router.link_status(),
            "rejected": dict(sorted(rejected.items())),
            "member": self.member_role,
            "rejoining": self.rejoining and not self._votes(),
            **configuration_map(caps.membership),
        }
        if core.role is Role.LEADER and caps.progress is not None:
            progress = caps.progress.progress
            out["progress"] = {p: pr.match for p, pr in sorted(progress.items())}
        return out
