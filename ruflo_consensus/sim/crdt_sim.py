"""The CRDT backend in the deterministic simulator.

Every node runs a :class:`~ruflo_consensus.core.crdt.CrdtCore` over the topology's links
(gossip and anti-entropy go to direct neighbours only). Clients are pinned to one replica
each — that is where CRDT session guarantees live — and run ``put``, ``incr`` and
``read`` on a few keys. The network and node faults are the engine's; a crashed node
restarts from the document state it persisted.

Checks, after the nemesis stops and the network heals:

- **convergence**: every replica ends with the same application value, state vector and
  document fingerprint; the report says how long after the last heal (and last write)
  that first became true, in simulated milliseconds and anti-entropy rounds;
- **acknowledged writes**: every acknowledged ``put`` is in the converged state unless a
  later write (by the HLC/node merge rule) superseded it, and every counter equals the
  sum of the increments applied (bounded by the unacknowledged ones);
- **monotonic reads**: a client never reads an older version of a key than it read before.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..check.convergence import (
    AckedWrite,
    ClientRead,
    check_acknowledged_writes,
    check_monotonic_reads,
    converged,
)
from ..check.history import Op
from ..core.base import Message, Proposal
from ..core.crdt import CrdtConfig, CrdtCore, CrdtUpdate, SyncReply, SyncRequest
from ..crdt_machines import CrdtKV, HlcTimestamp
from ..statemachine import CommandRejected
from ..topology import Topology
from .config import SimConfig
from .engine import FIRST_BACKEND_KIND, EngineNode, SimEngine
from .simulator import SimResult

__all__ = ["CrdtSimulation"]

_REQ, _REPLY, _TIMEOUT, _NEXT, _PROBE = range(FIRST_BACKEND_KIND, FIRST_BACKEND_KIND + 5)
_PROBE_US = 10_000


@dataclass(slots=True)
class _Replica:
    core: CrdtCore | None
    state: bytes | None = None
    applied: set[tuple[str, int]] = field(default_factory=set)


@dataclass(slots=True)
class _Request:
    client: int
    name: str
    seq: int
    command: dict[str, Any]


@dataclass(slots=True)
class _Reply:
    client: int
    seq: int
    result: Any
    record: int


@dataclass(slots=True)
class _Client:
    index: int
    process: int
    name: str
    node: int
    seq: int = 0
    counter: int = 0
    pending: tuple[int, dict[str, Any], Op, int] | None = None  # seq, command, op, started


def _crdt_trace(m: Message) -> str:
    if isinstance(m, CrdtUpdate):
        return f"U {len(m.update)} {m.ttl}"
    if isinstance(m, SyncRequest):
        return f"S {len(m.state_vector)}"
    if isinstance(m, SyncReply):
        return f"R {len(m.update)}"
    return type(m).__name__


class CrdtSimulation(SimEngine):
    """One deterministic run of CRDT replicas under a workload and a nemesis.

    ``crdt_config`` lets tests switch anti-entropy off to prove the checks can fail.
    """

    def __init__(
        self,
        config: SimConfig,
        crdt_config: CrdtConfig | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.crdt_config = crdt_config or CrdtConfig()
        super().__init__(config, topology or config.build_topology(), self.crdt_config.tick_ms)
        self.replicas = [_Replica(None) for _ in self.nodes]
        for node in self.nodes:
            self.replicas[node.index].core = self._make_core(node)
        # clients stop with the nemesis, so convergence is measured on a quiet system
        self.ops_end_us = self.faults_end_us
        self.clients = [_Client(i, i, f"c{i}", i % len(self.nodes)) for i in range(config.clients)]
        self.history: list[Op] = []
        self.writes: list[dict[str, Any]] = []
        self.reads: list[ClientRead] = []
        self.last_write_us = 0
        self.probe_log: list[tuple[int, bool]] = []
        self.probes = 0
        self.handle(_REQ, lambda a, b: self._request(a))
        self.handle(_REPLY, lambda a, b: self._reply_arrived(a))
        self.handle(_TIMEOUT, lambda a, b: self._timeout(a, b))
        self.handle(_NEXT, lambda a, b: self._next_op(self.clients[a]))
        self.handle(_PROBE, lambda a, b: self._probe())

    # ------------------------------------------------------------------ nodes

    def _make_core(self, node: EngineNode) -> CrdtCore:
        rng = random.Random(self.rng.getrandbits(64))
        return CrdtCore(
            node.id,
            self.ids,
            self.topology.neighbours(node.id),
            rng,
            CrdtKV(),
            self.crdt_config,
            self.replicas[node.index].state,
        )

    def on_start(self) -> None:
        """Start the clients and the convergence probe."""
        for client in self.clients:
            self.push(int(self.rng.random() * 10_000), _NEXT, client.index)
        self.push(self.faults_end_us + _PROBE_US, _PROBE)

    def core_of(self, node: EngineNode) -> CrdtCore | None:
        """The replica's CRDT core (None while crashed)."""
        return self.replicas[node.index].core

    def message_key(self, message: Message) -> str:
        """CRDT messages in the trace: kind and payload size."""
        return _crdt_trace(message)

    def on_queued(self, node: EngineNode, kind: int, item: Any) -> None:
        """A client request that waited while the replica was paused."""
        self._request(item)

    def crash_node(self, node: EngineNode) -> None:
        """Lose the document in memory; the persisted state stays."""
        rep = self.replicas[node.index]
        rep.core = None
        rep.applied = set()

    def restart_node(self, node: EngineNode) -> None:
        """Reload the replica from its persisted document state."""
        rep = self.replicas[node.index]
        rep.core = self._make_core(node)
        self.trace(f"{node.id} restart ({len(rep.state or b'')} bytes of state)")
        self.process_ready(node)

    def process_ready(self, node: EngineNode) -> None:
        """Persist the document, send, and answer the clients whose commands ran."""
        rep = self.replicas[node.index]
        core = rep.core
        assert core is not None
        if not core.has_ready():
            return
        rd = core.ready()
        if rd.persist.state is not None:
            rep.state = rd.persist.state  # durable before anything leaves
        for m in rd.messages:
            self.send(m)
        for r in rd.results:
            self._answer(node, rep, r.proposal, r.value)

    # ------------------------------------------------------------------ clients

    def _next_op(self, client: _Client) -> None:
        if self.now >= self.ops_end_us or client.pending is not None:
            return
        rng = self.rng
        key = f"k{rng.randrange(self.config.keys)}"
        roll = rng.random()
        client.counter += 1
        if roll < 0.4:
            value = f"{client.process}.{client.counter}"
            command: dict[str, Any] = {"op": "put", "key": key, "value": value}
            op = Op(client.process, "invoke", "put", key, value)
        elif roll < 0.6:
            amount = rng.randrange(1, 5)
            command = {"op": "incr", "key": key, "amount": amount}
            op = Op(client.process, "invoke", "incr", key, amount)
        else:
            command = {"op": "read", "key": key}
            op = Op(client.process, "invoke", "read", key, None)
        client.seq += 1
        client.pending = (client.seq, command, op, self.now)
        self.history.append(op)
        self._send_request(client)

    def _send_request(self, client: _Client) -> None:
        assert client.pending is not None
        seq, command, _, _ = client.pending
        if not self.lossy():
            self.push(
                self.now + self.latency(), _REQ, _Request(client.index, client.name, seq, command)
            )
        self.push(self.now + int(self.config.client_timeout_ms * 1000), _TIMEOUT, client.index, seq)

    def _request(self, req: _Request) -> None:
        client = self.clients[req.client]
        node = self.nodes[client.node]
        if not node.up:
            return
        if node.paused:
            node.inbox.append((_REQ, req))
            return
        rep = self.replicas[node.index]
        assert rep.core is not None
        self.trace(f"{req.name}>{node.id} req {req.seq}")
        rep.core.propose(Proposal(req.name, req.seq, req.command))
        self.process_ready(node)

    def _answer(self, node: EngineNode, rep: _Replica, p: Proposal, value: Any) -> None:
        assert p.client is not None
        cmd = p.command
        record = -1
        key = (p.client, p.seq)
        if (
            isinstance(cmd, dict)
            and cmd.get("op") in ("put", "incr")
            and not isinstance(value, CommandRejected)
            and key not in rep.applied
        ):
            rep.applied.add(key)
            record = len(self.writes)
            self.last_write_us = self.now
            self.writes.append(
                {
                    "node": node.id,
                    "op": cmd["op"],
                    "key": cmd["key"],
                    "value": cmd.get("value"),
                    "amount": cmd.get("amount", 0),
                    "ts": HlcTimestamp.from_wire(value) if cmd["op"] == "put" else None,
                    "client": p.client,
                    "acknowledged": False,
                }
            )
        index = next((c.index for c in self.clients if c.name == p.client), None)
        if index is None or self.lossy():
            return
        self.push(self.now + self.latency(), _REPLY, _Reply(index, p.seq, value, record))

    def _reply_arrived(self, reply: _Reply) -> None:
        client = self.clients[reply.client]
        if client.pending is None or client.pending[0] != reply.seq:
            return
        _, _, op, _ = client.pending
        result = reply.result
        if reply.record >= 0:
            self.writes[reply.record]["acknowledged"] = True
        if isinstance(result, CommandRejected):
            done = Op(op.process, "fail", op.f, op.key, op.value)
        elif op.f == "read":
            ts = result.get("ts") if isinstance(result, dict) else None
            stamp = HlcTimestamp.from_wire(ts) if ts is not None else None
            value = result.get("value") if isinstance(result, dict) else None
            self.reads.append(ClientRead(client.name, op.key, stamp, value, self.ids[client.node]))
            done = Op(op.process, "ok", "read", op.key, value)
        else:
            done = Op(op.process, "ok", op.f, op.key, op.value)
        self.history.append(done)
        client.pending = None
        self.push(
            self.now + int(self.rng.random() * self.config.think_ms * 1000), _NEXT, client.index
        )

    def _timeout(self, index: int, seq: int) -> None:
        client = self.clients[index]
        if client.pending is None or client.pending[0] != seq:
            return
        _, _, op, started = client.pending
        if self.now - started >= int(self.config.client_give_up_ms * 1000):
            self.history.append(Op(op.process, "info", op.f, op.key, op.value))
            client.pending = None
            client.process += len(self.clients)
            client.name = f"c{client.index}g{client.process // len(self.clients)}"
            client.seq = 0
            self.push(self.now + 1000, _NEXT, client.index)
            return
        self._send_request(client)  # same replica, same (client, seq): answered once

    # ------------------------------------------------------------------ convergence

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, bytes], dict[str, bytes]]:
        values, svs, fps = {}, {}, {}
        for node in self.nodes:
            core = self.replicas[node.index].core
            if core is None:
                continue
            values[node.id] = core.value()
            svs[node.id] = core.state_vector()
            fps[node.id] = core.fingerprint()
        return values, svs, fps

    def _probe(self) -> None:
        self.probes += 1
        same = False
        if all(n.up and not n.paused for n in self.nodes):
            _, svs, fps = self._snapshot()
            same = len(set(svs.values())) == 1 and len(set(fps.values())) == 1
        self.probe_log.append((self.now, same))
        if self.now + _PROBE_US <= self.end_us:
            self.push(self.now + _PROBE_US, _PROBE)

    def _time_to_converge(self) -> float | None:
        """Simulated ms from the last heal or write until the replicas agreed for good.

        Probes run every 10 ms after the nemesis stops; the answer is the first probe at
        or after the quiet point from which every later probe saw agreement.
        """
        quiet_from = max(self.last_heal_us, self.last_write_us)
        settled: int | None = None
        for at, same in self.probe_log:
            if at < quiet_from:
                continue
            if same and settled is None:
                settled = at
            elif not same:
                settled = None
        return None if settled is None else (settled - quiet_from) / 1000

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run to the end, then check convergence, acknowledged writes and session reads."""
        started = time.perf_counter()
        self.run_loop()
        for client in self.clients:
            if client.pending is not None:
                op = client.pending[2]
                self.history.append(Op(op.process, "info", op.f, op.key, op.value))
        values, svs, fps = self._snapshot()
        report = converged(values, svs, fps)
        violations: list[str] = []
        if len(values) < len(self.nodes):
            violations.append("a replica was still down at the end of the run")
        if not report.converged:
            violations.append(f"replicas did not converge: {report.describe()}")
        final: Any = next(iter(values.values()), {})
        acks = [AckedWrite(**w) for w in self.writes]
        violations += [f"acknowledged write: {v}" for v in check_acknowledged_writes(acks, final)]
        violations += [f"monotonic reads: {v}" for v in check_monotonic_reads(self.reads)]
        converge_ms = self._time_to_converge() if report.converged else None
        merged = {"local": 0, "gossip-new": 0, "sync-new": 0, "gossip-duplicate": 0}
        for rep in self.replicas:
            if rep.core is not None:
                for k in merged:
                    merged[k] += rep.core.updates_applied.get(k, 0)
        properties: dict[str, Any] = {
            "converged": report.converged,
            "time to converge after the last heal (ms)": converge_ms,
            "anti-entropy rounds to converge": (
                None
                if converge_ms is None
                else round(converge_ms / self.crdt_config.anti_entropy_ms, 1)
            ),
            "acknowledged writes present": not any(
                v.startswith("acknowledged") for v in violations
            ),
            "monotonic reads": not any(v.startswith("monotonic") for v in violations),
            "writes applied": len(self.writes),
            "writes acknowledged": sum(1 for w in self.writes if w["acknowledged"]),
            "updates merged": merged,
        }
        return SimResult(
            config=self.config,
            trace_hash=self.trace_hash(),
            history=self.history,
            violation=None,
            recent_events=list(self.recent),
            invariant_checks={
                "convergence": self.probes + 1,
                "acknowledged-writes": len(acks),
                "monotonic-reads": len(self.reads),
            },
            faults=dict(sorted(self.fault_counts.items())),
            leader_changes=0,
            terms=0,
            messages_delivered=self.delivered,
            messages_dropped=self.dropped,
            messages_duplicated=self.duplicated,
            messages_relayed=self.relayed,
            events=self.events,
            sim_seconds=self.now / 1e6,
            wall_seconds=time.perf_counter() - started,
            rejected=dict(sorted(self.rejected.items())),
            commit_index=0,
            properties=properties,
            property_violations=violations,
        )
