"""The deterministic cluster simulator.

One ``random.Random(seed)`` drives everything: link latencies, drops and duplicates, the
nemesis' fault schedule, each node's election randomness (seeded from the master
generator) and the clients' workload. Time is virtual (integer microseconds) and advances
by popping the earliest event off a heap; ties break by insertion order. Nothing reads the
wall clock, iterates a hash-ordered set, or uses a global random generator, so the same
config gives the same run — and the same trace hash — in any process.

Events: node ticks (at each node's possibly drifting clock rate), message deliveries,
client requests/replies/timeouts, nemesis faults and heals, and periodic invariant checks.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import log
from typing import Any

from ..check.history import Op
from ..core.base import (
    ConsensusCore,
    Entry,
    HardState,
    Message,
    NodeId,
    NotLeader,
    Persist,
    Proposal,
    ProposalDropped,
    ProtocolError,
    Role,
)
from ..core.raft import (
    AppendEntries,
    AppendResponse,
    RaftConfig,
    RaftCore,
    RequestVote,
    VoteResponse,
)
from ..statemachine import CommandRejected, KVStateMachine, SessionTable
from .config import SimConfig
from .invariants import InvariantViolation, RaftInvariants

__all__ = ["ClientReply", "ClientRequest", "CoreFactory", "SimResult", "SimStorage", "Simulation"]

CoreFactory = Callable[
    [NodeId, Sequence[NodeId], random.Random, RaftConfig, HardState | None, Sequence[Entry]],
    ConsensusCore,
]

# event kinds
_TICK, _DELIVER, _CLIENT_REQ, _CLIENT_REPLY, _CLIENT_TIMEOUT, _CLIENT_NEXT = range(6)
_CLIENT_RESEND, _NEMESIS, _HEAL, _CHECK, _STOP_FAULTS = range(6, 11)


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
    """A node's answer: ``ok`` with a result, or not the leader (with a hint)."""

    client_index: int
    seq: int
    ok: bool
    result: Any
    leader: NodeId | None


class SimStorage:
    """A node's simulated durable state: hard state and log (index 0 is a sentinel)."""

    def __init__(self) -> None:
        self.hard_state: HardState | None = None
        self.log: list[Entry] = [Entry(0, 0, None)]
        self.writes = 0

    def save(self, persist: Persist) -> None:
        """Apply a :class:`Persist` as the core asked: truncate, append, store hard state."""
        if persist.truncate_from is not None:
            del self.log[persist.truncate_from :]
        if persist.entries:
            self.log.extend(persist.entries)
        if persist.hard_state is not None:
            self.hard_state = persist.hard_state
        self.writes += 1


@dataclass(slots=True)
class _Node:
    id: NodeId
    index: int
    core: ConsensusCore | None
    storage: SimStorage
    table: SessionTable
    up: bool = True
    paused: bool = False
    inbox: list[tuple[int, Any]] = field(default_factory=list)
    rate: float = 1.0
    tick_gen: int = 0
    waiting: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    op: Op
    command: dict[str, Any]
    seq: int
    started: int
    attempt: int
    target: int


@dataclass(slots=True)
class _Client:
    index: int
    process: int
    name: str
    seq: int = 0
    pending: _Pending | None = None
    leader_guess: int | None = None
    counter: int = 0
    last_seen: dict[str, str] = field(default_factory=dict)


@dataclass
class SimResult:
    """What a run produced; :mod:`ruflo_consensus.sim.report` turns it into a report."""

    config: SimConfig
    trace_hash: str
    history: list[Op]
    violation: InvariantViolation | None
    recent_events: list[str]
    invariant_checks: dict[str, int]
    faults: dict[str, int]
    leader_changes: int
    terms: int
    messages_delivered: int
    messages_dropped: int
    messages_duplicated: int
    events: int
    sim_seconds: float
    wall_seconds: float
    rejected: dict[str, int]
    commit_index: int


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


def default_core_factory(
    node_id: NodeId,
    peers: Sequence[NodeId],
    rng: random.Random,
    config: RaftConfig,
    hard_state: HardState | None,
    entries: Sequence[Entry],
) -> ConsensusCore:
    """Build a :class:`RaftCore` (the simulator's default backend)."""
    return RaftCore(node_id, peers, rng, config, hard_state, entries)


class Simulation:
    """One deterministic run of a cluster under a workload and a nemesis.

    ``core_factory`` builds each node's core (on start and on every restart from its
    persisted state); tests pass deliberately broken cores to prove the checks can fail.
    """

    def __init__(
        self,
        config: SimConfig,
        core_factory: CoreFactory = default_core_factory,
        raft_config: RaftConfig | None = None,
    ) -> None:
        self.config = config
        self.core_factory = core_factory
        self.raft_config = raft_config or RaftConfig()
        self.rng = random.Random(config.seed)
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self.ids: list[NodeId] = [f"n{i + 1}" for i in range(config.nodes)]
        self.by_id: dict[NodeId, int] = {nid: i for i, nid in enumerate(self.ids)}
        self.tick_us = self.raft_config.tick_ms * 1000
        self.end_us = int(config.duration_s * 1e6)
        self.faults_end_us = max(0, self.end_us - int(config.quiet_tail_s * 1e6))
        self.ops_end_us = max(0, self.end_us - int(min(1.0, config.duration_s / 4) * 1e6))
        self.invariants = RaftInvariants()
        self.history: list[Op] = []
        faults = set(config.faults)
        self.base_drop = config.drop_rate if "drop" in faults else 0.0
        self.base_dup = config.dup_rate if "dup" in faults else 0.0
        self.extra_drop = 0.0
        self.extra_dup = 0.0
        self.jitter_us = 0
        self.blocked: dict[tuple[int, int], int] = {}
        self.fault_counts: dict[str, int] = {}
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0
        self.events = 0
        self.leader_changes = 0
        self.rejected: dict[str, int] = {}
        self._random = self.rng.random
        self._lat_base = config.latency_min_ms * 1000
        self._lat_spread = max(0.0, config.latency_mean_ms - config.latency_min_ms) * 1000
        self._hasher = hashlib.blake2b(digest_size=16)
        self._trace_buf: list[str] = []
        self.recent: deque[str] = deque(maxlen=40)
        self.nodes: list[_Node] = []
        for i, nid in enumerate(self.ids):
            storage = SimStorage()
            node = _Node(nid, i, None, storage, SessionTable(KVStateMachine()))
            node.core = self._make_core(node)
            self.nodes.append(node)
        self.clients = [_Client(index=i, process=i, name=f"c{i}") for i in range(config.clients)]
        self._active_faults: list[tuple[str, Any]] = []

    # ------------------------------------------------------------------ plumbing

    def _make_core(self, node: _Node) -> ConsensusCore:
        rng = random.Random(self.rng.getrandbits(64))
        st = node.storage
        return self.core_factory(
            node.id, self.ids, rng, self.raft_config, st.hard_state, st.log[1:]
        )

    def _push(self, at: int, kind: int, a: Any = None, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, a, b))

    def _trace(self, line: str) -> None:
        entry = f"{self.now} {line}"
        self._trace_buf.append(entry)
        self.recent.append(entry)
        if len(self._trace_buf) >= 2048:
            self._flush_trace()

    def _flush_trace(self) -> None:
        if self._trace_buf:
            self._hasher.update("\n".join(self._trace_buf).encode())
            self._hasher.update(b"\n")
            self._trace_buf = []

    def _count_fault(self, kind: str) -> None:
        self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1

    def _latency(self) -> int:
        # base + exponential(mean spread), written out (same draws as random.expovariate)
        rand = self._random
        lat = self._lat_base - self._lat_spread * log(1.0 - rand())
        if self.jitter_us:
            lat += rand() * self.jitter_us
        return int(lat) + 1

    # ------------------------------------------------------------------ network

    def _send(self, m: Message) -> None:
        rand = self._random
        if rand() < self.base_drop + self.extra_drop:
            self.dropped += 1
            return
        link = (self.by_id[m.src], self.by_id[m.dst])
        self._seq += 1
        heapq.heappush(self._heap, (self.now + self._latency(), self._seq, _DELIVER, m, link))
        if rand() < self.base_dup + self.extra_dup:
            self.duplicated += 1
            self._push(self.now + self._latency(), _DELIVER, m, link)

    def _deliver(self, m: Message, link: tuple[int, int]) -> None:
        if link in self.blocked:
            self.dropped += 1
            return
        node = self.nodes[link[1]]
        if not node.up:
            self.dropped += 1
            return
        if node.paused:
            node.inbox.append((_DELIVER, m))
            return
        self._step(node, m)

    def _step(self, node: _Node, m: Message) -> None:
        assert node.core is not None
        self.delivered += 1
        line = f"{self.now} {m.src}>{m.dst} {_trace_key(m)}"
        self._trace_buf.append(line)
        self.recent.append(line)
        if len(self._trace_buf) >= 2048:
            self._flush_trace()
        try:
            node.core.step(m)
        except ProtocolError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            return
        self._process_ready(node)

    def _process_ready(self, node: _Node) -> None:
        core = node.core
        assert core is not None
        if not core.has_ready():
            return
        rd = core.ready()
        node.storage.save(rd.persist)
        for rc in rd.role_changes:
            self._trace(f"{rc.node} role {rc.role} term {rc.term} leader {rc.leader}")
            if rc.role is Role.LEADER:
                self.leader_changes += 1
                self.invariants.on_leader(node.id, rc.term, node.storage.log, self.now)
            else:
                node.waiting.clear()
        for m in rd.messages:
            self._send(m)
        for c in rd.committed:
            self._apply(node, c.entry)
        for proposal, reason in rd.dropped:
            if proposal.client is not None:
                node.waiting.pop((proposal.client, proposal.seq), None)
            self._trace(f"{node.id} dropped {proposal.client}#{proposal.seq}: {reason}")

    def _apply(self, node: _Node, entry: Entry) -> None:
        self.invariants.on_apply(node.id, entry, self.now)
        p = entry.proposal
        if p is None:
            return
        result = node.table.apply(p.client, p.seq, p.command)
        if p.client is not None:
            client_index = node.waiting.pop((p.client, p.seq), None)
            if client_index is not None:
                self._reply(node, client_index, p.seq, True, result)

    def _reply(self, node: _Node, client_index: int, seq: int, ok: bool, result: Any) -> None:
        leader = node.core.leader if node.core is not None else None
        if self.rng.random() < self.base_drop + self.extra_drop:
            self.dropped += 1
            return
        reply = ClientReply(client_index, seq, ok, result, leader)
        self._push(self.now + self._latency(), _CLIENT_REPLY, reply)

    # ------------------------------------------------------------------ nodes

    def _schedule_tick(self, node: _Node) -> None:
        interval = max(1, int(self.tick_us / node.rate))
        self._push(self.now + interval, _TICK, node.index, node.tick_gen)

    def _tick(self, node: _Node, gen: int) -> None:
        if gen != node.tick_gen or not node.up:
            return
        self._schedule_tick(node)
        if node.paused:
            return
        assert node.core is not None
        node.core.tick()
        self._process_ready(node)

    def _crash(self, node: _Node) -> None:
        node.up = False
        node.paused = False
        node.inbox.clear()
        node.core = None
        node.waiting.clear()
        node.tick_gen += 1
        self._trace(f"{node.id} crash")

    def _restart(self, node: _Node) -> None:
        node.table = SessionTable(KVStateMachine())
        node.core = self._make_core(node)
        node.up = True
        node.tick_gen += 1
        self._trace(f"{node.id} restart term {node.core.term} log {len(node.storage.log) - 1}")
        self._schedule_tick(node)
        self._process_ready(node)

    def _resume(self, node: _Node) -> None:
        node.paused = False
        self._trace(f"{node.id} resume ({len(node.inbox)} queued)")
        inbox, node.inbox = node.inbox, []
        for kind, item in inbox:
            if not node.up or node.paused:
                break
            if kind == _DELIVER:
                self._step(node, item)
            else:
                self._client_request(item)

    # ------------------------------------------------------------------ clients

    def _next_op(self, client: _Client) -> None:
        if self.now >= self.ops_end_us or client.pending is not None:
            return
        rng = self.rng
        key = f"k{rng.randrange(self.config.keys)}"
        roll = rng.random()
        client.counter += 1
        token = f"{client.process}.{client.counter}"
        command: dict[str, Any]
        if roll < 0.35:
            command = {"op": "get", "key": key}
            op = Op(client.process, "invoke", "get", key, None)
        elif roll < 0.6:
            command = {"op": "put", "key": key, "value": token}
            op = Op(client.process, "invoke", "put", key, token)
        elif roll < 0.85:
            command = {"op": "append", "key": key, "value": token + ";"}
            op = Op(client.process, "invoke", "append", key, token + ";")
        else:
            old = client.last_seen.get(key, "")
            command = {"op": "cas", "key": key, "old": old, "new": token}
            op = Op(client.process, "invoke", "cas", key, [old, token])
        client.seq += 1
        target = client.leader_guess
        if target is None:
            target = rng.randrange(len(self.nodes))
        client.pending = _Pending(op, command, client.seq, self.now, 0, target)
        self.history.append(op)
        self._send_request(client)

    def _send_request(self, client: _Client) -> None:
        p = client.pending
        assert p is not None
        req = ClientRequest(client.name, client.index, p.seq, p.command, self.ids[p.target])
        if self.rng.random() < self.base_drop + self.extra_drop:
            self.dropped += 1
        else:
            self._push(self.now + self._latency(), _CLIENT_REQ, req)
        timeout = int(self.config.client_timeout_ms * 1000)
        self._push(self.now + timeout, _CLIENT_TIMEOUT, client.index, (p.seq, p.attempt))

    def _client_request(self, req: ClientRequest) -> None:
        node = self.nodes[self.by_id[req.node]]
        if not node.up:
            return
        if node.paused:
            node.inbox.append((_CLIENT_REQ, req))
            return
        core = node.core
        assert core is not None
        self._trace(f"{req.client}>{node.id} req {req.seq}")
        last = node.table.sessions.get(req.client)
        if last is not None and req.seq <= last[0]:
            if req.seq == last[0]:
                self._reply(node, req.client_index, req.seq, True, last[1])
            return
        if core.role is not Role.LEADER:
            self._reply(node, req.client_index, req.seq, False, None)
            return
        key = (req.client, req.seq)
        if key in node.waiting:
            return
        try:
            core.propose(Proposal(req.client, req.seq, req.command))
        except (NotLeader, ProposalDropped):
            self._reply(node, req.client_index, req.seq, False, None)
            return
        node.waiting[key] = req.client_index
        self._process_ready(node)

    def _client_reply(self, reply: ClientReply) -> None:
        client = self.clients[reply.client_index]
        p = client.pending
        if p is None or p.seq != reply.seq:
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
            self._push(self.now + delay, _CLIENT_RESEND, client.index, (p.seq, p.attempt))
            return
        client.leader_guess = p.target
        op = p.op
        result = reply.result
        if isinstance(result, CommandRejected):
            done = Op(op.process, "fail", op.f, op.key, op.value)
        elif op.f == "get":
            client.last_seen[op.key] = result
            done = Op(op.process, "ok", "get", op.key, result)
        elif op.f == "cas":
            done = Op(op.process, "ok" if result is True else "fail", "cas", op.key, op.value)
            if result is True:
                client.last_seen[op.key] = op.value[1]
        else:
            done = Op(op.process, "ok", op.f, op.key, op.value)
        self.history.append(done)
        self._trace(f"{client.name} {done.type} {op.f} {p.seq}")
        client.pending = None
        think = int(self.rng.random() * self.config.think_ms * 1000)
        self._push(self.now + think, _CLIENT_NEXT, client.index)

    def _client_timeout(self, client: _Client, seq: int, attempt: int, resend: bool) -> None:
        p = client.pending
        if p is None or p.seq != seq or p.attempt != attempt:
            return
        if not resend:
            if self.now - p.started >= int(self.config.client_give_up_ms * 1000):
                self._give_up(client)
                return
            p.attempt += 1
            p.target = (p.target + 1) % len(self.nodes)
            client.leader_guess = None
        self._send_request(client)

    def _give_up(self, client: _Client) -> None:
        p = client.pending
        assert p is not None
        op = p.op
        self.history.append(Op(op.process, "info", op.f, op.key, op.value))
        self._trace(f"{client.name} info {op.f} {p.seq}")
        # Like a crashed Jepsen process: a new process and client identity take over.
        # A fresh session id, so the old session's sequence numbers cannot collide.
        client.process += len(self.clients)
        client.name = f"c{client.index}g{client.process // len(self.clients)}"
        client.pending = None
        client.seq = 0
        client.counter = 0
        client.last_seen.clear()
        self._push(self.now + 1000, _CLIENT_NEXT, client.index)

    # ------------------------------------------------------------------ nemesis

    def _nemesis(self) -> None:
        if self.now >= self.faults_end_us:
            return
        cfg = self.config
        rng = self.rng
        lo, hi = cfg.nemesis_interval_s
        self._push(self.now + int(rng.uniform(lo, hi) * 1e6), _NEMESIS)
        if not cfg.faults:
            return
        kind = cfg.faults[rng.randrange(len(cfg.faults))]
        dlo, dhi = cfg.fault_duration_s
        heal_at = min(self.faults_end_us, self.now + int(rng.uniform(dlo, dhi) * 1e6))
        n = len(self.nodes)
        detail: Any = None
        if kind == "drop":
            amount = rng.uniform(0.1, 0.5)
            self.extra_drop += amount
            detail = amount
        elif kind == "dup":
            amount = rng.uniform(0.05, 0.3)
            self.extra_dup += amount
            detail = amount
        elif kind == "reorder":
            amount = int(rng.uniform(5, 50) * 1000)
            self.jitter_us += amount
            detail = amount
        elif kind in ("partition", "oneway"):
            if n < 2:
                return
            order = list(range(n))
            rng.shuffle(order)
            cut = rng.randrange(1, n)
            side_a, side_b = order[:cut], order[cut:]
            links = [(a, b) for a in side_a for b in side_b]
            if kind == "partition":
                links += [(b, a) for a, b in links]
            for link in links:
                self.blocked[link] = self.blocked.get(link, 0) + 1
            detail = links
            self._trace(f"nemesis {kind} {sorted(side_a)}|{sorted(side_b)}")
        elif kind in ("crash", "pause"):
            down = sum(1 for x in self.nodes if not x.up or x.paused)
            candidates = [x for x in self.nodes if x.up and not x.paused]
            if down >= (n - 1) // 2 or not candidates:
                return
            node = candidates[rng.randrange(len(candidates))]
            if kind == "crash":
                self._crash(node)
            else:
                node.paused = True
                self._trace(f"{node.id} pause")
            detail = node.index
        elif kind == "drift":
            node = self.nodes[rng.randrange(n)]
            node.rate = 1.0 + rng.uniform(-cfg.max_drift, cfg.max_drift)
            self._trace(f"{node.id} drift {node.rate:.4f}")
            detail = node.index
        self._count_fault(kind)
        record = (kind, detail)
        self._active_faults.append(record)
        self._push(heal_at, _HEAL, record)

    def _heal(self, record: tuple[str, Any]) -> None:
        if record not in self._active_faults:
            return
        self._active_faults.remove(record)
        kind, detail = record
        self._trace(f"heal {kind}")
        if kind == "drop":
            self.extra_drop = max(0.0, self.extra_drop - detail)
        elif kind == "dup":
            self.extra_dup = max(0.0, self.extra_dup - detail)
        elif kind == "reorder":
            self.jitter_us = max(0, self.jitter_us - detail)
        elif kind in ("partition", "oneway"):
            for link in detail:
                left = self.blocked[link] - 1
                if left:
                    self.blocked[link] = left
                else:
                    del self.blocked[link]
        elif kind == "crash":
            node = self.nodes[detail]
            if not node.up:
                self._restart(node)
        elif kind == "pause":
            node = self.nodes[detail]
            if node.paused:
                self._resume(node)
        elif kind == "drift":
            self.nodes[detail].rate = 1.0

    def _heal_all(self) -> None:
        for record in list(self._active_faults):
            self._heal(record)

    # ------------------------------------------------------------------ checks

    def _check_logs(self) -> None:
        logs = {n.id: n.storage.log for n in self.nodes}
        self.invariants.check_logs(logs, self.now)

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run to the configured duration (or the first invariant violation)."""
        started = time.perf_counter()
        for node in self.nodes:
            self._schedule_tick(node)
        for client in self.clients:
            self._push(int(self.rng.random() * 10_000), _CLIENT_NEXT, client.index)
        if self.config.faults:
            self._push(int(self.rng.uniform(*self.config.nemesis_interval_s) * 1e6), _NEMESIS)
        self._push(self.faults_end_us, _STOP_FAULTS)
        check_us = int(self.config.invariant_interval_s * 1e6)
        self._push(check_us, _CHECK)
        violation: InvariantViolation | None = None
        heap = self._heap
        pop = heapq.heappop
        end = self.end_us
        try:
            while heap:
                at, _, kind, a, b = pop(heap)
                if at > end:
                    break
                self.now = at
                self.events += 1
                if kind == _DELIVER:
                    self._deliver(a, b)
                elif kind == _TICK:
                    self._tick(self.nodes[a], b)
                elif kind == _CLIENT_REQ:
                    self._client_request(a)
                elif kind == _CLIENT_REPLY:
                    self._client_reply(a)
                elif kind == _CLIENT_TIMEOUT:
                    self._client_timeout(self.clients[a], b[0], b[1], resend=False)
                elif kind == _CLIENT_RESEND:
                    self._client_timeout(self.clients[a], b[0], b[1], resend=True)
                elif kind == _CLIENT_NEXT:
                    self._next_op(self.clients[a])
                elif kind == _NEMESIS:
                    self._nemesis()
                elif kind == _HEAL:
                    self._heal(a)
                elif kind == _STOP_FAULTS:
                    self._heal_all()
                elif kind == _CHECK:
                    self._check_logs()
                    self._push(self.now + check_us, _CHECK)
            self.now = min(self.now, end)
            self._check_logs()
        except InvariantViolation as exc:
            violation = exc
        for client in self.clients:
            if client.pending is not None:
                op = client.pending.op
                self.history.append(Op(op.process, "info", op.f, op.key, op.value))
        self._flush_trace()
        self._hasher.update(f"end {self.now}".encode())
        terms = max((n.core.term for n in self.nodes if n.core is not None), default=0)
        commit = max((getattr(n.core, "commit", 0) for n in self.nodes if n.core), default=0)
        return SimResult(
            config=self.config,
            trace_hash=self._hasher.hexdigest(),
            history=self.history,
            violation=violation,
            recent_events=list(self.recent),
            invariant_checks=dict(self.invariants.checks),
            faults=dict(sorted(self.fault_counts.items())),
            leader_changes=self.leader_changes,
            terms=terms,
            messages_delivered=self.delivered,
            messages_dropped=self.dropped,
            messages_duplicated=self.duplicated,
            events=self.events,
            sim_seconds=self.now / 1e6,
            wall_seconds=time.perf_counter() - started,
            rejected=dict(sorted(self.rejected.items())),
            commit_index=commit,
        )
