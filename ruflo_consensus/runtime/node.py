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
  ``compact`` once it has applied through the requested index.

Cancelling the nursery stops the node. Any task that raises takes the whole node down
with the exception (trio's nursery semantics): a node is never half-alive.

Bad input never crashes a node: every frame is size-checked, decoded, verified and
replay-checked before it reaches the core, and each refusal is counted per reason in
:attr:`Node.rejected`. Frames addressed to another node are relayed unchanged to the next
hop of the overlay (after their signature is checked).

**Routing around failures.** The next hop of a frame is the first step of a shortest path
in the overlay minus the links this node knows are down
(:meth:`~ruflo_consensus.topology.Topology.next_hops`): its own links (from the
transport), and every other node's, which each node floods as a signed *link-state*
announcement (kind 3, destination ``*``) when one of its links changes and every
``link_state_s`` seconds. An announcement older than three periods is forgotten. Every
frame carries a hop budget (the number of nodes) outside its signature, which each
relay lowers: a frame that inconsistent knowledge sends round in circles dies out.

**Membership.** The core starts with the spec's bootstrap voters as ``peers`` and, on a
spare (``join = true``), ``join=True``; every node of the spec is linked and relays
whether or not it is a member. :meth:`Node.change_membership` makes single-server
changes through the leader (:mod:`.membership`); a node outside the configuration keeps
running and relaying but refuses submits and reads with :class:`NotMemberError`.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from ..codec import DecodeError, decode_message, encode_message
from ..core.base import (
    CommandResult,
    Committed,
    ConfChangeKind,
    ConsensusCore,
    CoreFactory,
    Entry,
    HardState,
    Message,
    NodeId,
    NotLeader,
    Proposal,
    ProposalDropped,
    ProtocolError,
    ReadState,
    Role,
    RoleChange,
    Snapshot,
)
from ..core.raft import AppendEntries, InstallSnapshot, RaftConfig, RaftCore
from ..identity import (
    Envelope,
    EnvelopeError,
    NodeIdentity,
    NonceSource,
    ReplayedEnvelope,
    ReplayWindow,
    parse_frame,
    reframe,
    seal,
    verify_envelope,
)
from ..statemachine import (
    CommandError,
    CommandRejected,
    SessionTable,
    StateMachine,
    decode_result,
    encode_result,
    pack,
)
from ..storage import FileStorage, MemoryStorage, RaftStorage
from .membership import (
    KIND_CHANGE,
    KIND_CHANGE_REPLY,
    MembershipAdmin,
    configuration_map,
    member_role,
)
from .spec import ClusterSpec
from .transport import Transport

__all__ = [
    "BROADCAST",
    "KIND_CONSENSUS",
    "KIND_FORWARD",
    "KIND_FORWARD_REPLY",
    "KIND_LINK_STATE",
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
KIND_FORWARD = 1  # payload: [client, seq, command] — a follower hands a submit to the leader
KIND_FORWARD_REPLY = 2  # payload: [client, seq, status, encoded result]
KIND_LINK_STATE = 3  # payload: [down neighbour, ...] — flooded to every node
BROADCAST = "*"  # the destination of a flooded frame

_OK, _NOT_LEADER, _RETRY = 0, 1, 2
_TIMED_OUT = object()  # what _drive returns when a submit's deadline passed
_LEADER_MESSAGES = (AppendEntries, InstallSnapshot)  # sent before the leader's own fsync


class NodeError(Exception):
    """Base of the errors the node's client API raises."""


class SubmitTimeout(NodeError, TimeoutError):
    """No answer in time; the command may or may not have been applied (retry is safe)."""


class NotLeaderError(NodeError):
    """This node cannot order the command and was asked not to forward it."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader})")
        self.leader = leader


class NotMemberError(NodeError):
    """This node is not in the cluster's configuration (a spare not added yet, or a node
    whose removal it has seen): it cannot serve clients; ask another node."""


def default_core_factory(
    node_id: NodeId,
    voters: Sequence[NodeId],
    rng: random.Random,
    config: RaftConfig,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    *,
    snapshot: Snapshot | None = None,
    join: bool = False,
) -> ConsensusCore:
    """Build a :class:`RaftCore` from what storage returned (snapshot, hard state, log).

    ``voters`` are the bootstrap voters (:attr:`ClusterSpec.voters`). The node starts a
    node that is not one of them as a spare, with ``join=True`` — on every start: the core
    itself notices when its stored log or snapshot already names it (it has joined) and
    then votes and campaigns as its configuration says.
    """
    try:
        return RaftCore(
            node_id, voters, rng, config, hard_state, entries, snapshot=snapshot, join=join
        )
    except ValueError as exc:  # a snapshot of another membership, a gap in the log
        raise NodeError(f"cannot start from the stored state: {exc}") from None


class _Waiter:
    """One client waiting for a result; ``poke`` wakes it to re-check (role changed)."""

    __slots__ = ("confirmed", "done", "event", "query", "result")

    def __init__(self, query: Any = None) -> None:
        self.event = trio.Event()
        self.done = False
        self.confirmed = False  # a read whose read point is known: it only waits to apply
        self.result: Any = None
        self.query = query

    def resolve(self, result: Any) -> None:
        if not self.done:
            self.result = result
            self.done = True
            self.event.set()

    def poke(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        """Until resolved or poked (the node's sweeper pokes every waiter periodically)."""
        await self.event.wait()
        if not self.done:
            self.event = trio.Event()


@dataclass(slots=True)
class _ApplyWork:
    """What the ready task hands the apply task from one ``Ready``, in order."""

    snapshot: Snapshot | None
    committed: list[Committed]
    reads: list[ReadState]
    results: list[CommandResult]
    snapshot_request: int | None


@dataclass(slots=True)
class _Lane:
    client: str
    seq: int = 0


class Node:
    """One consensus node on real sockets. See the module docstring.

    ``peer_keys`` maps every node id of the spec to its Ed25519 public key,
    ``client_keys`` every client allowed on ``/client`` to its own. ``storage``
    defaults to a :class:`FileStorage` in the spec's data folder for this node, or memory
    when the spec has none. ``relay_hook`` (tests only) may rewrite frames this node
    relays, to play a malicious relay.
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
        self.table = SessionTable(state_machine)
        self.applied = 0
        self.core = core_factory(
            node_id,
            spec.voters,
            random.Random(self.rng.getrandbits(64)),
            spec.raft,
            stored.hard_state,
            stored.entries,
            snapshot=stored.snapshot,
            join=node_id not in spec.voters,
        )
        self.relay_hook = relay_hook
        self.rejected: Counter[str] = Counter()
        self.relayed = 0
        self.delivered = 0
        self.window = ReplayWindow(spec.runtime.replay_max_age_s)
        self.client_window = ReplayWindow(spec.runtime.replay_max_age_s)
        self.nonces = NonceSource()
        self.transport = Transport(
            node_id,
            spec,
            self._on_frame,
            self._serve_client,
            self.rejected,
            self.rng,
            self._on_link_change,
        )
        # routing: what others say is down, the hop table it gives, how frames fared
        self._reports: dict[str, tuple[tuple[int, bytes], frozenset[str], float]] = {}
        self._routes: dict[str, str] | None = None
        self._links_changed = trio.Event()
        self._hop_limit = min(len(spec.ids), 255)
        self.unroutable = 0
        self.flood_duplicates = 0
        self.max_frame = spec.runtime.max_frame
        self.tick_s = spec.raft.tick_ms / 1000
        # how long a waiting client waits before it re-checks who leads and re-sends
        self._retry_s = max(0.2, 2 * spec.raft.election_timeout_max_ms / 1000)
        self._sweep_s = self._retry_s / 2  # how often the sweeper pokes every waiter
        self.role_changes: list[RoleChange] = []
        self._wake_event = trio.Event()
        self._role_event = trio.Event()
        self._applied_event = trio.Event()
        self._waiters: dict[tuple[str, int], _Waiter] = {}
        self._readers: dict[int, _Waiter] = {}
        self._read_points: list[tuple[int, int]] = []
        self._next_ctx = 0
        self._apply_send, self._apply_recv = trio.open_memory_channel[_ApplyWork](1024)
        self.snapshots_taken = 0
        self.snapshots_restored = 0
        boot = self.nonces.boot.hex()
        self._lanes_send, self._lanes_recv = trio.open_memory_channel[_Lane](
            spec.runtime.max_sessions
        )
        for k in range(spec.runtime.max_sessions):
            self._lanes_send.send_nowait(_Lane(f"{node_id}/{boot}/{k}"))
        self._forward_limit = trio.Semaphore(4096)
        self.membership = MembershipAdmin(self)
        self._nursery: trio.Nursery | None = None
        self.started = trio.Event()
        self.port: int | None = None

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``nursery.start(node.run)`` returns once it listens."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.port = await nursery.start(self.transport.run)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._ready_loop)
                nursery.start_soon(self._apply_loop)
                nursery.start_soon(self._sweeper)
                nursery.start_soon(self._announce_loop)
                self._wake()
                self.started.set()
                log.info(
                    "%s listening on %s", self.node_id, self.spec.endpoints[self.node_id].url()
                )
                task_status.started(self)
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                self.storage.close()

    def _wake(self) -> None:
        self._wake_event.set()

    async def _sweeper(self) -> None:
        """Poke every waiting client now and then: lost forwards are re-sent, lost read
        confirmations asked again (a waiter otherwise sleeps until it is resolved)."""
        while True:
            await trio.sleep(self._sweep_s)
            for w in self._waiters.values():
                w.poke()
            for r in self._readers.values():
                r.poke()

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
                self._wake()

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
                        await trio.to_thread.run_sync(self.storage.save, rd.persist)
                    else:
                        self.storage.save(rd.persist)
                for m in messages:
                    self._send_message(m)
                for rc in rd.role_changes:
                    self._on_role_change(rc)
                for proposal, _reason in rd.dropped:
                    if proposal.client is not None:
                        w = self._waiters.get((proposal.client, proposal.seq))
                        if w is not None:
                            w.poke()
                if (
                    rd.snapshot is not None
                    or rd.committed
                    or rd.reads
                    or rd.results
                    or rd.snapshot_request is not None
                ):
                    await self._apply_send.send(
                        _ApplyWork(
                            rd.snapshot, rd.committed, rd.reads, rd.results, rd.snapshot_request
                        )
                    )

    async def _apply_loop(self) -> None:
        async for work in self._apply_recv:
            if work.snapshot is not None:
                self._restore(work.snapshot)
            for c in work.committed:
                self._apply(c)
            if work.snapshot_request is not None:
                self._compact(work.snapshot_request)
            for r in work.results:
                p = r.proposal
                if p.client is not None:
                    w = self._waiters.get((p.client, p.seq))
                    if w is not None:
                        w.resolve(r.value)
            for rs in work.reads:
                reader = self._readers.get(rs.ctx)
                if reader is None:
                    continue
                if rs.index < 0:
                    reader.poke()
                else:
                    reader.confirmed = True
                    self._read_points.append((rs.index, rs.ctx))
            if self._read_points:
                self._serve_reads()
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
        for (client, seq), w in self._waiters.items():
            session = self.table.sessions.get(client)
            if session is not None and session[0] == seq:
                w.resolve(session[1])

    def _compact(self, index: int) -> None:
        """The core asked for a snapshot through ``index``: take it and hand it back."""
        compact = getattr(self.core, "compact", None)
        if compact is None or self.applied != index:
            return  # (the request is a suggestion; the next one comes with more entries)
        if compact(index, self.table.snapshot()) is not None:
            self.snapshots_taken += 1
            self._wake()

    def _apply(self, c: Committed) -> None:
        entry = c.entry
        self.applied = entry.index
        p = entry.proposal
        if p is None:
            return
        result = self.table.apply(p.client, p.seq, p.command)
        if p.client is not None:
            w = self._waiters.get((p.client, p.seq))
            if w is not None:
                w.resolve(result)

    def _serve_reads(self) -> None:
        keep = []
        for index, ctx in self._read_points:
            reader = self._readers.get(ctx)
            if reader is None:
                continue
            if index <= self.applied:
                try:
                    reader.resolve(self.table.machine.apply(reader.query))
                except CommandError as exc:
                    reader.resolve(CommandRejected(exc.code, exc.message))
            else:
                keep.append((index, ctx))
        self._read_points = keep

    def _on_role_change(self, rc: RoleChange) -> None:
        self.role_changes.append(rc)
        del self.role_changes[:-100]
        log.info("%s is %s in term %d (leader %s)", rc.node, rc.role, rc.term, rc.leader)
        for w in self._waiters.values():
            w.poke()
        for r in self._readers.values():
            r.poke()
        self._role_event.set()
        self._role_event = trio.Event()

    # ------------------------------------------------------------------ frames

    def _send_message(self, m: Message) -> None:
        self._send_envelope(m.dst, KIND_CONSENSUS, encode_message(m))

    def _send_envelope(self, dst: NodeId, kind: int, payload: bytes) -> None:
        hop = self._next_hop(dst)
        if hop is None:
            self.unroutable += 1
            return
        frame = seal(self.identity, dst, kind, payload, self.nonces, hops=self._hop_limit)
        self.transport.send(hop, frame)

    # ------------------------------------------------------------------ routing

    def _known_down(self) -> set[tuple[str, str]]:
        """The links this node knows are down: its own, and what fresh reports say."""
        down = {(self.node_id, p) for p, s in self.transport.links.items() if s.down}
        horizon = trio.current_time() - 3 * self.spec.runtime.link_state_s
        for origin, (_order, links, received) in self._reports.items():
            if received >= horizon:
                down.update((origin, p) for p in links)
        return down

    def _next_hop(self, dst: str) -> str | None:
        """The neighbour a frame for ``dst`` goes to: around known failures, else direct."""
        routes = self._routes
        if routes is None:
            routes = self._routes = self.spec.topology.next_hops(
                self.node_id, down_links=self._known_down()
            )
        hop = routes.get(dst)
        if hop is None and dst in self.transport.links:
            return dst  # no way round: queue it for the link's return
        return hop

    def _on_link_change(self, peer: str) -> None:
        self._routes = None
        self._links_changed.set()

    async def _announce_loop(self) -> None:
        """Flood this node's down links on every change, and every ``link_state_s``."""
        while True:
            with trio.move_on_after(self.spec.runtime.link_state_s):
                await self._links_changed.wait()
            self._links_changed = trio.Event()
            self._routes = None  # reports may have aged out
            down = sorted(p for p, s in self.transport.links.items() if s.down)
            frame = seal(
                self.identity,
                BROADCAST,
                KIND_LINK_STATE,
                pack(down),
                self.nonces,
                hops=self._hop_limit,
            )
            self._flood(frame)
            await trio.sleep(self.tick_s)  # at most one announcement per tick

    def _flood(self, frame: bytes, skip: str | None = None) -> None:
        for peer in self.transport.neighbours:
            if peer != skip and self.transport.live(peer):
                self.transport.send(peer, frame)

    def _on_link_state(self, sender: str, env: Envelope, frame: tuple[bytes, bytes, int]) -> None:
        raw = self._decode_payload(env.payload, None)
        if raw is None:
            return
        neighbours = self.spec.topology.neighbours(sender)
        if not all(isinstance(p, str) and p in neighbours for p in raw):
            self.rejected["bad-field"] += 1
            return
        order = (env.timestamp_ms, env.nonce)
        known = self._reports.get(sender)
        if known is None or known[0] < order:
            self._reports[sender] = (order, frozenset(raw), trio.current_time())
            self._routes = None
        body, signature, hops = frame
        if hops > 0:
            self._flood(reframe(body, signature, hops - 1), skip=sender)

    def _on_frame(self, data: bytes) -> None:
        """Everything that arrives on ``/peer``: check, then relay, flood or deliver."""
        try:
            env, body, signature, hops = parse_frame(data, self.max_frame)
            verify_envelope(env, body, signature, self.peer_keys)
        except EnvelopeError as exc:
            self.rejected[exc.reason] += 1
            return
        if env.dst == BROADCAST:
            if env.sender == self.node_id:
                return  # our own announcement, back from a neighbour
            try:
                self.window.check(env.sender, env.nonce, env.timestamp_ms)
            except ReplayedEnvelope:
                self.flood_duplicates += 1  # it reached us by another path already
                return
            except EnvelopeError as exc:
                self.rejected[exc.reason] += 1
                return
            if env.kind == KIND_LINK_STATE:
                self._on_link_state(env.sender, env, (body, signature, hops))
            else:
                self.rejected["unknown-kind"] += 1
            return
        if env.dst != self.node_id:
            if env.dst not in self.peer_keys:
                self.rejected["wrong-destination"] += 1
                return
            if hops <= 0:
                self.rejected["hop-limit"] += 1
                return
            hop = self._next_hop(env.dst)
            if hop is None or hop == env.sender:
                self.rejected["no-route"] += 1
                return
            frame = reframe(body, signature, hops - 1)
            if self.relay_hook is not None:
                frame = self.relay_hook(frame)
            if self.transport.send(hop, frame):
                self.relayed += 1
            return
        try:
            self.window.check(env.sender, env.nonce, env.timestamp_ms)
        except EnvelopeError as exc:
            self.rejected[exc.reason] += 1
            return
        if env.kind == KIND_CONSENSUS:
            self._deliver(env.sender, env.payload)
        elif env.kind == KIND_FORWARD:
            self._on_forward(env.sender, env.payload)
        elif env.kind == KIND_FORWARD_REPLY:
            self._on_forward_reply(env.payload)
        elif env.kind == KIND_CHANGE:
            self.membership.on_change(env.sender, env.payload)
        elif env.kind == KIND_CHANGE_REPLY:
            self.membership.on_reply(env.payload)
        else:
            self.rejected["unknown-kind"] += 1

    def _deliver(self, sender: str, payload: bytes) -> None:
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
            self._wake()

    def _decode_payload(self, payload: bytes, size: int | None) -> list[Any] | None:
        """A msgpack list of ``size`` items (any length for None), or None (counted)."""
        try:
            raw = msgpack.unpackb(payload, raw=False, max_array_len=1 << 16)
        except Exception:
            raw = None
        if not isinstance(raw, list) or (size is not None and len(raw) != size):
            self.rejected["malformed"] += 1
            return None
        return raw

    def _on_forward(self, sender: str, payload: bytes) -> None:
        raw = self._decode_payload(payload, 3)
        if raw is None:
            return
        client, seq, command = raw
        if not isinstance(client, str) or type(seq) is not int or seq < 0:
            self.rejected["bad-field"] += 1
            return
        if self._nursery is None:
            return
        self._nursery.start_soon(self._serve_forward, sender, client, seq, command)

    async def _serve_forward(self, sender: str, client: str, seq: int, command: Any) -> None:
        status, result = _RETRY, None
        if self._forward_limit.value == 0:
            self.rejected["forward-busy"] += 1
        else:
            async with self._forward_limit:
                try:
                    result = await self._submit_as(
                        client, seq, command, self._retry_s * 2, forward=False
                    )
                    status = _OK
                except NotLeaderError:
                    status = _NOT_LEADER
                except SubmitTimeout:
                    status = _RETRY
        reply = [client, seq, status, encode_result(result)]
        self._send_envelope(sender, KIND_FORWARD_REPLY, pack(reply))

    def _on_forward_reply(self, payload: bytes) -> None:
        raw = self._decode_payload(payload, 4)
        if raw is None:
            return
        client, seq, status, result = raw
        if not isinstance(client, str) or type(seq) is not int or type(status) is not int:
            self.rejected["bad-field"] += 1
            return
        w = self._waiters.get((client, seq))
        if w is None:
            return
        if status == _OK:
            try:
                w.resolve(decode_result(result))
            except ValueError:
                self.rejected["bad-field"] += 1
        else:
            w.poke()

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
        try:
            lane = self._lanes_recv.receive_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(limit) as scope:
                lane = await self._lanes_recv.receive()
            if scope.cancelled_caught:
                raise SubmitTimeout(f"no free session lane within {limit} s") from None
        try:
            lane.seq += 1
            return await self._submit_as(lane.client, lane.seq, command, limit)
        finally:
            self._lanes_send.send_nowait(lane)

    async def _submit_as(
        self, client: str, seq: int, command: Any, timeout: float, *, forward: bool = True
    ) -> Any:
        """Submit as ``(client, seq)``: propose here if leader, else forward (if allowed)."""
        if forward:
            self._check_member()
        key = (client, seq)
        w = self._waiters.get(key)
        owner = w is None
        if w is None:
            w = self._waiters[key] = _Waiter()
        try:
            if timeout < 5 * self._sweep_s:  # a short timeout: exact, with a cancel scope
                with trio.CancelScope(deadline=trio.current_time() + timeout):
                    return await self._drive(w, owner, client, seq, command, math.inf, forward)
            else:
                # A long one (the usual 30 s) is checked whenever the waiter wakes, which
                # the sweeper makes happen every _sweep_s: a cancel scope per submit is a
                # tenth of a busy leader's CPU. The timeout fires up to _sweep_s late.
                deadline = trio.current_time() + timeout
                result = await self._drive(w, owner, client, seq, command, deadline, forward)
                if result is not _TIMED_OUT:
                    return result
            raise SubmitTimeout(f"no result for {client}#{seq} within {timeout} s")
        finally:
            if owner:
                self._waiters.pop(key, None)

    async def _drive(
        self,
        w: _Waiter,
        owner: bool,
        client: str,
        seq: int,
        command: Any,
        deadline: float,
        forward: bool,
    ) -> Any:
        """Propose (as leader) or forward until ``w`` resolves; ``_TIMED_OUT`` at ``deadline``."""
        attempt: tuple[Any, ...] = ()
        last_send = -1e9
        while not w.done:
            core = self.core
            now = trio.current_time()
            if now >= deadline:
                return _TIMED_OUT
            if core.role is Role.LEADER:
                if owner and attempt != ("lead", core.term):
                    try:
                        core.propose(Proposal(client, seq, command))
                        attempt = ("lead", core.term)
                        self._wake()
                    except NotLeader:
                        pass
                    except ProposalDropped:
                        await trio.sleep(self.tick_s * 5)
                        continue
            elif not forward:
                raise NotLeaderError(core.leader)
            elif core.leader is not None:
                target = ("fwd", core.term, core.leader)
                if attempt != target or now - last_send > self._retry_s:
                    attempt, last_send = target, now
                    self._send_envelope(core.leader, KIND_FORWARD, pack([client, seq, command]))
            await w.wait()
        return w.result

    async def read(self, query: Any, *, timeout: float | None = None) -> Any:
        """A linearizable read: ``query`` runs on this node's machine once it has applied
        everything committed before the read started (Raft ReadIndex, on any node).

        ``query`` must not change state (for the KV machine: ``{"op": "get", ...}``).
        """
        limit = self.spec.runtime.submit_timeout_s if timeout is None else timeout
        self._check_member()
        read_index = getattr(self.core, "read_index", None)
        if read_index is None:
            return self.table.machine.apply(query)  # a backend without ordering (CRDT)
        try:
            with trio.fail_after(limit):
                while True:
                    self._next_ctx += 1
                    ctx = self._next_ctx
                    w = self._readers[ctx] = _Waiter(query)
                    try:
                        try:
                            read_index(ctx)
                        except NotLeader:
                            with trio.move_on_after(self._retry_s):
                                await self._role_event.wait()
                            continue
                        self._wake()
                        await w.wait()
                        while w.confirmed and not w.done:
                            await w.wait()  # confirmed: wait for the apply, do not re-ask
                        if w.done:
                            return w.result
                    finally:
                        self._readers.pop(ctx, None)
        except trio.TooSlowError:
            raise SubmitTimeout(f"read not confirmed within {limit} s") from None

    def transfer_leadership(self, target: NodeId) -> None:
        """Ask this node, the leader, to hand leadership to ``target`` (a caught-up voter).

        Raises :class:`NotLeaderError` on a node that does not lead and
        :class:`~ruflo_consensus.core.base.TransferRefused` when the core refuses.
        """
        transfer = getattr(self.core, "transfer_leadership", None)
        if transfer is None:
            raise NodeError(f"the {type(self.core).__name__} backend has no leadership transfer")
        if self.core.role is not Role.LEADER:
            raise NotLeaderError(self.core.leader)
        transfer(target)
        self._wake()

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
        (nothing changed; ``.reason`` says why: ``already-member``, ``unknown-node``,
        ``learner-behind``, ``not-in-spec`` for a node the spec does not list, …).
        Transient refusals (``term-not-committed``, ``change-in-progress``, …) are
        retried until ``timeout`` (default ``submit_timeout_s``); raises
        :class:`SubmitTimeout` when no answer came in time (the change may or may not
        have been made: look at :meth:`status`).
        """
        limit = self.spec.runtime.submit_timeout_s if timeout is None else timeout
        deadline = trio.current_time() + limit
        with trio.move_on_after(limit):
            return await self.membership.change(kind, node_id, deadline - 0.05 * limit)
        raise SubmitTimeout(f"membership change {kind} {node_id} not done within {limit} s")

    @property
    def member_role(self) -> str:
        """``"voter"``, ``"learner"`` or ``"none"`` in the configuration in effect here."""
        return member_role(self.core, self.node_id)

    def _check_member(self) -> None:
        """Raise :class:`NotMemberError` on a non-leader outside the configuration."""
        if self.member_role == "none" and self.core.role is not Role.LEADER:
            raise NotMemberError(
                f"{self.node_id} is not a member of the cluster's configuration; ask another node"
            )

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Wait until this node has applied ``index`` (tests: a restarted node caught up)."""
        with trio.fail_after(timeout):
            while self.applied < index:
                await self._applied_event.wait()

    # ------------------------------------------------------------------ status

    @property
    def role(self) -> Role:
        """The core's role."""
        return self.core.role

    @property
    def leader(self) -> NodeId | None:
        """Who the core believes leads."""
        return self.core.leader

    def status(self) -> dict[str, Any]:
        """Role, term, leader, commit/applied indexes, link health, rejection counts and
        membership: ``member`` (this node's ``voter``/``learner``/``none``), ``voters``,
        ``learners``, ``conf_index``, ``conf_committed`` as this node sees them, and on a
        leader ``progress`` (each member's highest replicated index)."""
        core = self.core
        rejected = Counter(self.rejected)
        rejected.update(getattr(core, "rejected", {}))
        out: dict[str, Any] = {
            "id": self.node_id,
            "role": str(core.role),
            "term": core.term,
            "leader": core.leader,
            "commit": getattr(core, "commit", None),
            "last_index": getattr(core, "last_index", None),
            "applied": self.applied,
            "snapshot_index": getattr(core, "snapshot_index", None),
            "snapshots_taken": self.snapshots_taken,
            "snapshots_restored": self.snapshots_restored,
            "relayed": self.relayed,
            "delivered": self.delivered,
            "unroutable": self.unroutable,
            "down_links": sorted(list(pair) for pair in self._known_down()),
            "inbound": self.transport.inbound,
            "links": [
                {**s.to_json(), "queued": self.transport.queued(p)}
                for p, s in self.transport.links.items()
            ],
            "rejected": dict(sorted(rejected.items())),
            "member": self.member_role,
            **configuration_map(core),
        }
        if core.role is Role.LEADER and hasattr(core, "progress"):
            out["progress"] = {p: pr.match for p, pr in sorted(core.progress.items())}
        return out

    # ------------------------------------------------------------------ client protocol

    async def _serve_client(self, ws: Any) -> None:
        from .client import serve_client

        await serve_client(self, ws)
