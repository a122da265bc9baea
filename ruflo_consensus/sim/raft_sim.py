"""The deterministic cluster simulator.

One ``random.Random(seed)`` drives everything: link latencies, drops and duplicates, the
nemesis' fault schedule, each node's election randomness (seeded from the master
generator) and the clients' workload. Time is virtual (integer microseconds) and advances
by popping the earliest event off a heap; ties break by insertion order. Nothing reads the
wall clock, iterates a hash-ordered set, or uses a global random generator, so the same
config gives the same run — and the same trace hash — in any process.

Events: node ticks (at each node's possibly drifting clock rate), message deliveries,
client requests/replies/timeouts, disk fsyncs, nemesis faults and heals, and periodic
invariant checks.

Every node persists through the real storage code: a
:class:`~ruflo_consensus.storage.FileStorage` on its own
:class:`~ruflo_consensus.storage.SimDisk`. The driver writes each ``Ready``'s ``persist`` at
once but fsyncs asynchronously (one fsync covers every write before it, after a simulated
disk latency), and holds the ``Ready`` — its messages, applies and client replies — until
the fsync that covers it completes, so nothing that depends on a write leaves before the
write is durable. A crash in between loses what the disk had not synced.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..check.history import Op
from ..core.base import (
    ConsensusCore,
    CoreFactory,
    Entry,
    Message,
    NodeId,
    NotLeader,
    Proposal,
    ProposalDropped,
    Ready,
    Role,
    TransferRefused,
)
from ..core.raft import (
    AppendEntries,
    AppendResponse,
    RaftConfig,
    RaftCore,
    RaftCoreFactory,
    RequestVote,
    VoteResponse,
)
from ..statemachine import CommandError, SessionTable, StateMachine
from ..storage import (
    FileStorage,
    SimDisk,
    SimulatedCrash,
    SnapshotError,
    StorageError,
    StorageIOError,
    WritePoint,
)
from ..storage.base import CorruptLogError, StoredState
from ..topology import Topology
from .config import SimConfig
from .engine import FIRST_BACKEND_KIND, EngineNode, SimResult
from .invariants import InvariantViolation, RaftInvariants
from .kv_workload import ClientSimEngine, KVClient, PendingOp
from .membership import MembershipInvariants, MembershipNemesis
from .workload import ReplicaState, SimWorkload, WorkloadFactory, build_workload

__all__ = [
    "ClientReply",
    "ClientRequest",
    "NotARaftCore",
    "RaftSimulation",
    "SimResult",
    "default_core_factory",
]


# Raft simulation event kinds (the engine and the clients own the shared ones)
(
    _CLIENT_REQ,
    _CLIENT_REPLY,
    _CLIENT_RESEND,
    _DISK_SYNC,
    _DISK_RETRY,
) = range(FIRST_BACKEND_KIND, FIRST_BACKEND_KIND + 5)

DISK_FAULTS = ("disk-lose", "disk-torn", "disk-read-error")


class NotARaftCore(TypeError):
    """A core factory given to :class:`RaftSimulation` built something that is not a RaftCore."""


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's command sent to a node."""

    client: str
    client_index: int
    seq: int
    command: Any
    node: NodeId


@dataclass(frozen=True, slots=True)
class ClientReply:
    """A node's answer: ``ok`` with a result, or not the leader (with a hint).

    ``client`` is the session the request came from: a client that gave up and continues
    under a new session numbers its requests from 1 again, so a late answer to the old
    session must not be taken for an answer to the new one.
    """

    client: str
    client_index: int
    seq: int
    ok: bool
    result: Any
    leader: NodeId | None


class _TornWrite:
    """A storage fault hook that, once armed, tears the next WAL record at a random length."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.armed = False

    def reached(self, point: WritePoint) -> None:
        """Nothing happens at the other write points."""

    def tear(self, point: WritePoint, size: int) -> int | None:
        """While armed, write only a random prefix of the next WAL record (then crash)."""
        if not self.armed or point is not WritePoint.WAL_MID_RECORD:
            return None
        self.armed = False
        return self.rng.randrange(size)


@dataclass(slots=True)
class _Held:
    """A ``Ready`` whose effects wait for the fsync of write number ``write`` (0: none)."""

    ready: Ready
    write: int


@dataclass(slots=True)
class _RaftNode:
    core: RaftCore | None
    disk: SimDisk
    hook: _TornWrite
    table: SessionTable
    storage: FileStorage | None = None
    # the log as of the crash, for the invariants while the node is down ([0]: snapshot point)
    last_log: list[Entry] = field(default_factory=lambda: [Entry(0, 0, None)])
    applied: int = 0  # what the driver applied to `table` (the core may have handed out more)
    held: deque[_Held] = field(default_factory=deque)
    writes: int = 0  # writes issued since the storage was opened
    synced: int = 0  # writes covered by a completed fsync
    syncing: int = 0  # writes the fsync in flight covers (0: none in flight)
    gen: int = 0  # bumped on every crash, so stale fsync completions are ignored
    crash_mode: str = "process"
    waiting: dict[tuple[str, int], int] = field(default_factory=dict)
    # confirmed read points waiting for the state machine to catch up: (index, request)
    reads: list[tuple[int, ClientRequest]] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class _Pending(PendingOp):
    target: int  # the node the request goes to


@dataclass(slots=True, kw_only=True)
class _Client(KVClient[_Pending]):
    leader_guess: int | None = None


def _is_read(command: Any) -> bool:
    return isinstance(command, dict) and command.get("op") == "get"


def _trace_key(m: Message) -> str:
    if isinstance(m, AppendEntries):
        return f"AE {m.term} {m.prev_index} {m.prev_term} {len(m.entries)} {m.commit}"
    if isinstance(m, AppendResponse):
        return f"AR {m.term} {int(m.success)} {m.index} {m.hint_index} {m.hint_term}"
    if isinstance(m, RequestVote):
        return f"RV {m.term} {m.last_index} {m.last_term} {int(m.pre_vote)}"
    if isinstance(m, VoteResponse):
        return f"VR {m.term} {int(m.granted)} {int(m.pre_vote)}"
    return repr(m)


default_core_factory = RaftCoreFactory()
"""Builds a plain :class:`RaftCore` (the simulator's default backend)."""


class RaftSimulation(ClientSimEngine[_Client]):
    """One deterministic run of a Raft cluster under a workload and a nemesis.

    ``core_factory`` builds each node's core (on start and on every restart from its
    persisted state); tests pass deliberately broken cores to prove the checks can fail.
    ``topology`` wires the nodes (default: a full mesh); messages between nodes without a
    direct link are relayed along it. ``workload`` builds the clients' workload and the
    replicas' state machine (default: the KV workload; see :mod:`.workload`).
    """

    def __init__(
        self,
        config: SimConfig,
        core_factory: CoreFactory = default_core_factory,
        raft_config: RaftConfig | None = None,
        topology: Topology | None = None,
        workload: WorkloadFactory | None = None,
    ) -> None:
        faults = set(config.faults)
        self.raft_config = raft_config or RaftConfig(
            read_mode="lease" if config.reads == "lease" else "read-index",
            # the simulator knows how far it lets clocks drift: leases must assume as much
            lease_drift_bound=min(
                0.9, config.max_drift if faults & {"drift", "leader-slow"} else 0.0
            ),
            snapshot_entries=config.snapshot_entries,
            snapshot_bytes=0,
            snapshot_chunk_bytes=config.snapshot_chunk_bytes,
        )
        topology = topology or config.build_topology()
        super().__init__(config, topology, self.raft_config.tick_ms)
        self.core_factory = core_factory
        self.leader_changes = 0
        self.transfers_refused = 0
        self.storage_stats: dict[str, int] = {}
        self.workload: SimWorkload = build_workload(workload, config, self.rng, self.ids)
        self.invariants = RaftInvariants(reference=lambda: SessionTable(self._new_machine()))
        self.membership = MembershipNemesis(self)
        self.membership_invariants = MembershipInvariants()
        self.raft: list[_RaftNode] = []
        for node in self.nodes:
            rn = _RaftNode(None, SimDisk(), _TornWrite(self.rng), SessionTable(self._new_machine()))
            node.state = rn
            self.raft.append(rn)
            stored = self._open_storage(node, rn)
            assert stored is not None  # a fresh disk always opens
            rn.core = self._make_core(node, stored)
        self.clients = [_Client(index=i, process=i, name=f"c{i}") for i in range(config.clients)]
        self.handle(_CLIENT_REQ, lambda a, b: self._client_request(a))
        self.handle(_CLIENT_REPLY, lambda a, b: self._client_reply(a))
        self.handle(_CLIENT_RESEND, lambda a, b: self._resend(a, b))
        self.handle(_DISK_SYNC, lambda a, b: self._sync_done(a, b))
        self.handle(_DISK_RETRY, lambda a, b: self._retry_restart(a))

    # ------------------------------------------------------------------ nodes

    def _new_machine(self) -> StateMachine:
        """A fresh replica state machine for the configured workload."""
        return self.workload.new_machine()

    def _count(self, key: str, n: int = 1) -> None:
        self.storage_stats[key] = self.storage_stats.get(key, 0) + n

    def _make_core(self, node: EngineNode, stored: StoredState) -> RaftCore:
        rng = random.Random(self.rng.getrandbits(64))
        core: ConsensusCore = self.core_factory(
            node.id,
            self.ids,
            rng,
            self.raft_config,
            stored.hard_state,
            stored.entries,
            snapshot=stored.snapshot,
        )
        if not isinstance(core, RaftCore):
            raise NotARaftCore(
                f"the core factory {self.core_factory!r} built a {type(core).__name__} for "
                f"{node.id}; the Raft simulation drives a RaftCore (or a subclass of it)"
            )
        return core

    def _open_storage(self, node: EngineNode, rn: _RaftNode) -> StoredState | None:
        """Open the node's WAL on its disk (running recovery); None if the disk fails.

        A read error leaves the node down and retries later: a node never starts from an
        empty disk in place of one it cannot read (it could vote twice). A log or snapshot
        the crash model cannot explain is a storage bug, reported as a violation.
        """
        try:
            storage = FileStorage(
                f"/{node.id}",
                fs=rn.disk,
                segment_bytes=self.config.wal_segment_bytes,
                faults=rn.hook,
            )
            stored = storage.load()
        except (StorageIOError, SimulatedCrash) as exc:
            rn.disk.clear_faults()
            self._count("opens failed")
            self.trace(f"{node.id} disk open failed: {exc}")
            return None
        except (CorruptLogError, SnapshotError, StorageError) as exc:
            raise InvariantViolation(
                "storage-recovery", self.now, f"{node.id} cannot reopen its WAL: {exc}"
            ) from None
        rn.storage = storage
        self._count("opens")
        if storage.recovery.truncated:
            self._count("torn tails cut", len(storage.recovery.truncated))
        rn.writes = rn.synced = rn.syncing = 0
        rn.applied = 0
        return stored

    def _log_of(self, rn: _RaftNode) -> list[Entry]:
        """The node's log as the invariants take it: [snapshot point, entries…].

        A running node's is its core's (everything it wrote, and proposals not yet
        written); a crashed node's is the one it had when it crashed.
        """
        return rn.last_log if rn.core is None else rn.core.log

    def core_of(self, node: EngineNode) -> RaftCore | None:
        """The node's Raft core (None while crashed)."""
        return self.raft[node.index].core

    def message_key(self, message: Message) -> str:
        """Raft messages in the trace: type, term and the indexes that matter."""
        return _trace_key(message)

    def on_queued(self, node: EngineNode, kind: int, item: Any) -> None:
        """A client request that waited while the node was paused."""
        self._client_request(item)

    def crash_node(self, node: EngineNode) -> None:
        """Lose the core, the state machine, the held Readies and pending client waits.

        What the disk keeps depends on the crash: a process crash keeps every write (the
        kernel still has them), a power cut (``disk-lose``) loses every unsynced byte, a
        torn write (``disk-torn``) keeps a random prefix of them.
        """
        rn = self.raft[node.index]
        rn.last_log = list(self._log_of(rn))
        rn.core = None
        rn.waiting.clear()
        rn.reads.clear()
        rn.held.clear()
        rn.gen += 1
        rn.syncing = 0
        rn.storage = None
        rn.hook.armed = False
        mode, rn.crash_mode = rn.crash_mode, "process"
        if mode != "process":
            report = rn.disk.crash(self.rng if mode == "torn" else None)
            lost = sum(report.lost.values())
            self._count(f"crashes ({mode})")
            self._count("unsynced bytes lost", lost)
            self.trace(f"{node.id} power cut ({mode}): {lost} unsynced bytes lost")

    def restart_node(self, node: EngineNode) -> None:
        """Reopen the node's WAL (recovery), rebuild the core from snapshot + log."""
        rn = self.raft[node.index]
        stored = self._open_storage(node, rn)
        if stored is None:
            node.up = False  # stays down; a later attempt may read the disk again
            self.push(self.now + int(self.config.disk_retry_s * 1e6), _DISK_RETRY, node.index)
            return
        rn.table = SessionTable(self._new_machine())
        rn.core = self._make_core(node, stored)
        snap = stored.snapshot
        self.trace(
            f"{node.id} restart term {rn.core.term} snapshot {snap.index if snap else 0} "
            f"log {rn.core.last_index}"
        )
        self.process_ready(node)

    def _retry_restart(self, index: int) -> None:
        node = self.nodes[index]
        if not node.up and self.now < self.end_us:
            self._restart(node)

    def _power_cut(self, node: EngineNode, mode: str) -> None:
        self.raft[node.index].crash_mode = mode
        self._crash(node)

    def on_check(self) -> None:
        """Log matching across all nodes' written logs; membership steps in each log."""
        self.invariants.check_logs(
            {n.id: self._log_of(self.raft[n.index]) for n in self.nodes}, self.now
        )
        self._check_membership()

    def _check_membership(self) -> None:
        logs = {}
        for n in self.nodes:
            rn = self.raft[n.index]
            log = self._log_of(rn)
            at = rn.core.configuration_at(log[0].index) if rn.core is not None else None
            logs[n.id] = (log, at)
        self.membership_invariants.check_logs(logs, self.now)

    # ------------------------------------------------------------------ the driver

    def process_ready(self, node: EngineNode) -> None:
        """Write the Ready's persist (fsync later), then hold it until that fsync is done."""
        rn = self.raft[node.index]
        core = rn.core
        assert core is not None
        if not core.has_ready():
            return
        rd = core.ready()
        self.membership_invariants.on_ready(node, core, rd, self.now)
        wait = 0
        if not rd.persist.is_empty():
            storage = rn.storage
            assert storage is not None
            try:
                storage.write(rd.persist)
            except SimulatedCrash:
                self._power_cut(node, "torn")
                return
            rn.writes += 1
            wait = rn.writes
            if not rn.syncing:
                self._start_sync(node, rn)
        for rc in rd.role_changes:
            self.trace(f"{rc.node} role {rc.role} term {rc.term} leader {rc.leader}")
            if rc.role is Role.LEADER:
                self.leader_changes += 1
                self.invariants.on_leader(node.id, rc.term, self._log_of(rn), self.now)
            else:
                rn.waiting.clear()
        rn.held.append(_Held(rd, wait))
        self._release(node, rn)

    def _start_sync(self, node: EngineNode, rn: _RaftNode) -> None:
        rn.syncing = rn.writes
        lo, hi = self.config.disk_sync_ms
        delay = int(self.rng.uniform(lo, hi) * 1000) + 1
        self.push(self.now + delay, _DISK_SYNC, node.index, rn.gen)

    def _sync_done(self, index: int, gen: int) -> None:
        node = self.nodes[index]
        rn = self.raft[index]
        if gen != rn.gen or rn.storage is None:
            return  # the node crashed while this fsync was in flight
        rn.storage.sync()
        self._count("fsyncs")
        rn.synced, rn.syncing = rn.syncing, 0
        if rn.writes > rn.synced:
            self._start_sync(node, rn)
        self._release(node, rn)

    def _release(self, node: EngineNode, rn: _RaftNode) -> None:
        """Carry out, in order, every held Ready whose write is durable."""
        if not node.up or node.paused:
            return  # a stopped process sends nothing; it catches up when it resumes
        while rn.held and rn.held[0].write <= rn.synced:
            self._carry_out(node, rn, rn.held.popleft().ready)
        core = rn.core
        if core is not None and core.has_ready():
            self.process_ready(node)

    def _carry_out(self, node: EngineNode, rn: _RaftNode, rd: Ready) -> None:
        """Send, restore, apply, answer reads; answer a snapshot request."""
        for m in rd.messages:
            self.send(m)
        if rd.snapshot is not None:
            self.invariants.on_snapshot(node.id, rd.snapshot, "restored", self.now)
            try:
                rn.table.restore(rd.snapshot.data)
            except CommandError as exc:
                raise InvariantViolation(
                    "snapshot-safety", self.now, f"{node.id} cannot restore a snapshot: {exc}"
                ) from None
            rn.applied = rd.snapshot.index
            self._count("snapshots restored")
        for c in rd.committed:
            self._apply(node, c.entry)
            rn.applied = c.entry.index
        for rs in rd.reads:
            req = rs.ctx
            if rs.index < 0:
                self._reply(node, req.client, req.client_index, req.seq, False, None)
            else:
                rn.reads.append((rs.index, req))
        if rn.reads:
            self._serve_reads(node, rn)
        for proposal, reason in rd.dropped:
            if proposal.client is not None:
                rn.waiting.pop((proposal.client, proposal.seq), None)
            self.trace(f"{node.id} dropped {proposal.client}#{proposal.seq}: {reason}")
        if rn.core is not None and rd.snapshot_request == rn.applied:
            snap = rn.core.compact(rn.applied, rn.table.snapshot())
            if snap is not None:
                self.invariants.on_snapshot(node.id, snap, "took", self.now)
                self._count("snapshots taken")

    def _serve_reads(self, node: EngineNode, rn: _RaftNode) -> None:
        applied = rn.applied
        waiting = []
        for index, req in rn.reads:
            if index <= applied:
                value = rn.table.machine.apply(req.command)
                self._reply(node, req.client, req.client_index, req.seq, True, value)
            else:
                waiting.append((index, req))
        rn.reads = waiting

    # ------------------------------------------------------------------ faults

    def leaders(self) -> list[tuple[EngineNode, RaftCore]]:
        """The running, unpaused nodes that believe they lead, with their cores."""
        found = []
        for n in self.nodes:
            core = self.raft[n.index].core
            if n.up and not n.paused and core is not None and core.role is Role.LEADER:
                found.append((n, core))
        return found

    def _crash_candidate(self) -> EngineNode | None:
        """A node the nemesis may take down, keeping at most a minority down or armed."""
        down = sum(1 for x in self.nodes if not x.up or x.paused or self.raft[x.index].hook.armed)
        candidates = [
            x for x in self.nodes if x.up and not x.paused and not self.raft[x.index].hook.armed
        ]
        if down >= self._max_down or not candidates:
            return None
        return candidates[self.rng.randrange(len(candidates))]

    def backend_fault(self, kind: str) -> Any:
        """Raft's faults: leader transfers, disk faults, and a slow, isolated leader.

        ``transfer``: the leader is asked to hand over to a random other node.
        ``disk-lose``: a node loses power; every write it had not fsynced is lost.
        ``disk-torn``: a node loses power in the middle of its next WAL write.
        ``disk-read-error``: a node loses power and its disk fails to read on restart.
        ``leader-slow``: the leader's clock runs slow by the drift bound, everyone else's
        fast by it, and the leader is cut off from the others (what leases must survive).
        """
        if kind == "transfer":
            return self._transfer()
        if kind in ("disk-lose", "disk-read-error"):
            node = self._crash_candidate()
            if node is None:
                return None
            if kind == "disk-read-error":
                self.raft[node.index].disk.fail_next_read()
            self._power_cut(node, "lose")
            return node.index
        if kind == "disk-torn":
            node = self._crash_candidate()
            if node is None:
                return None
            self.raft[node.index].hook.armed = True
            self.trace(f"{node.id} next WAL write will tear")
            return node.index
        if kind == "leader-slow":
            return self._slow_leader()
        if kind == "membership":
            return self.membership.inject()
        return None

    def heal_backend_fault(self, kind: str, detail: Any) -> None:
        """Restart a node a disk fault took down; give the slowed leader its clock back."""
        if kind in DISK_FAULTS:
            node = self.nodes[detail]
            self.raft[detail].hook.armed = False
            if not node.up:
                self._restart(node)
        elif kind == "leader-slow":
            self.unblock_links(detail)
            for n in self.nodes:
                n.rate = 1.0
        elif kind == "membership":
            self.membership.heal(detail)

    def _slow_leader(self) -> Any:
        leaders = self.leaders()
        if not leaders:
            return None
        leader = max(leaders, key=lambda found: found[1].term)[0]
        d = self.config.max_drift
        for n in self.nodes:
            n.rate = 1.0 - d if n is leader else 1.0 + d
        links = [(leader.index, o.index) for o in self.nodes if o is not leader]
        links += [(b, a) for a, b in links]
        self.block_links(links)
        self.trace(f"nemesis leader-slow {leader.id} rate {1.0 - d:.4f}, isolated")
        return links

    def _transfer(self) -> Any:
        leaders = self.leaders()
        if not leaders or len(self.nodes) < 2:
            return None
        leader, core = leaders[0]
        others = [n for n in self.ids if n != leader.id]
        target = others[self.rng.randrange(len(others))]
        try:
            core.transfer_leadership(target)
        except TransferRefused as exc:
            self.transfers_refused += 1
            self.trace(f"transfer {leader.id}->{target} refused: {exc}")
            return (leader.index, target, False)
        self.trace(f"transfer {leader.id}->{target}")
        self.process_ready(leader)
        return (leader.index, target, True)

    def _apply(self, node: EngineNode, entry: Entry) -> None:
        self.invariants.on_apply(node.id, entry, self.now)
        p = entry.proposal
        if p is None:
            return
        rn = self.raft[node.index]
        result = rn.table.apply(p.client, p.seq, p.command)
        if p.client is not None:
            client_index = rn.waiting.pop((p.client, p.seq), None)
            if client_index is not None:
                self._reply(node, p.client, client_index, p.seq, True, result)

    def _reply(
        self, node: EngineNode, client: str, client_index: int, seq: int, ok: bool, result: Any
    ) -> None:
        core = self.raft[node.index].core
        leader = core.leader if core is not None else None
        self.push_lossy(_CLIENT_REPLY, ClientReply(client, client_index, seq, ok, result, leader))

    # ------------------------------------------------------------------ clients

    def choose_command(self, client: _Client) -> tuple[dict[str, Any], Op]:
        """The workload's next command for ``client``."""
        return self.workload.next_command(client, self.rng)

    def start_op(self, client: _Client, command: dict[str, Any], op: Op) -> None:
        """Send to the node the client believes leads (a random one if it has no idea)."""
        target = client.leader_guess
        if target is None:
            target = self.rng.randrange(len(self.nodes))
        client.pending = _Pending(op, command, client.seq, self.now, target=target)
        self._send_request(client)

    def _send_request(self, client: _Client) -> None:
        p = client.pending
        assert p is not None
        req = ClientRequest(client.name, client.index, p.seq, p.command, self.ids[p.target])
        self.push_lossy(_CLIENT_REQ, req)
        self.arm_timeout(client)

    def _client_request(self, req: ClientRequest) -> None:
        node = self.nodes[self.by_id[req.node]]
        if not self.accepts(node, _CLIENT_REQ, req):
            return
        rn = self.raft[node.index]
        core = rn.core
        assert core is not None
        self.trace(f"{req.client}>{node.id} req {req.seq}")
        last = rn.table.sessions.get(req.client)
        if last is not None and req.seq <= last[0]:
            if req.seq == last[0]:
                self._reply(node, req.client, req.client_index, req.seq, True, last[1])
            return
        if self.config.reads != "log" and _is_read(req.command):
            try:
                core.read_index(req)
            except NotLeader:
                self._reply(node, req.client, req.client_index, req.seq, False, None)
                return
            self.process_ready(node)
            return
        if core.role is not Role.LEADER:
            self._reply(node, req.client, req.client_index, req.seq, False, None)
            return
        key = (req.client, req.seq)
        if key in rn.waiting:
            return
        try:
            core.propose(Proposal(req.client, req.seq, req.command))
        except (NotLeader, ProposalDropped):
            self._reply(node, req.client, req.client_index, req.seq, False, None)
            return
        rn.waiting[key] = req.client_index
        self.process_ready(node)

    def _client_reply(self, reply: ClientReply) -> None:
        client = self.clients[reply.client_index]
        p = client.pending
        if p is None or p.seq != reply.seq or reply.client != client.name:
            return
        if not reply.ok:
            hint = self.by_id.get(reply.leader) if reply.leader is not None else None
            if hint is not None and hint != p.target:
                p.target = hint
                delay = 100
            else:
                p.target = (p.target + 1) % len(self.nodes)
                delay = 20_000
            client.leader_guess = p.target
            p.attempt += 1
            self.push(self.now + delay, _CLIENT_RESEND, client.index, (p.seq, p.attempt))
            return
        client.leader_guess = p.target
        self.complete(client, reply.result)

    def outcome(self, client: _Client, result: Any) -> Op:
        """What the workload makes of the result of the client's pending operation."""
        assert client.pending is not None
        return self.workload.outcome(client.pending.op, result, client)

    def retry(self, client: _Client) -> None:
        """No answer in time: try the next node, with no idea who leads."""
        p = client.pending
        assert p is not None
        p.attempt += 1
        p.target = (p.target + 1) % len(self.nodes)
        client.leader_guess = None
        self._send_request(client)

    def _resend(self, index: int, attempt_id: tuple[int, int]) -> None:
        client = self.waiting(index, attempt_id)
        if client is not None:
            self._send_request(client)

    # ------------------------------------------------------------------ properties

    def _final_properties(self, clean: bool) -> tuple[dict[str, Any], list[str]]:
        """The workload's cross-replica properties of the live replicas after a clean run."""
        if not clean:
            return {}, []
        replicas = [
            ReplicaState(n.id, self.raft[n.index].applied, self.raft[n.index].table.machine)
            for n in self.nodes
            if n.up
        ]
        return self.workload.check_replicas(replicas)

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run to the configured duration (or the first invariant violation)."""
        started = time.perf_counter()
        violation: InvariantViolation | None = None
        try:
            self.run_loop()
            self.on_check()
        except InvariantViolation as exc:
            violation = exc
        self.close_history()
        cores = [rn.core for rn in self.raft if rn.core is not None]
        properties, property_violations = self._final_properties(violation is None)
        properties["storage"] = dict(sorted(self.storage_stats.items()))
        if self.membership.stats:
            properties["membership"] = dict(sorted(self.membership.stats.items()))
        return self.result(
            started,
            history=self.history,
            violation=violation,
            invariant_checks=self.invariants.checks | self.membership_invariants.checks,
            leader_changes=self.leader_changes,
            terms=max((c.term for c in cores), default=0),
            rejected=self.rejected,
            commit_index=max((c.commit for c in cores), default=0),
            properties=properties,
            property_violations=property_violations,
        )
