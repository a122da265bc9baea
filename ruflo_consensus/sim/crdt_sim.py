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
from .engine import FIRST_BACKEND_KIND, EngineNode, SimResult
from .kv_workload import ClientSimEngine, KVClient, PendingOp

__all__ = ["CrdtSimulation"]

_REQ, _REPLY, _PROBE = range(FIRST_BACKEND_KIND, FIRST_BACKEND_KIND + 3)
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


@dataclass(slots=True, kw_only=True)
class _Client(KVClient[PendingOp]):
    node: int  # the replica the client is pinned to


def _crdt_trace(m: Message) -> str:
    if isinstance(m, CrdtUpdate):
        return f"U {len(m.update)} {m.ttl}"
    if isinstance(m, SyncRequest):
        return f"S {len(m.state_vector)}"
    if isinstance(m, SyncReply):
        return f"R {len(m.update)}"
    return type(m).__name__


class CrdtSimulation(ClientSimEngine[_Client]):
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
        self.clients = [
            _Client(i, i, f"c{i}", node=i % len(self.nodes)) for i in range(config.clients)
        ]
        self.writes: list[dict[str, Any]] = []
        self.reads: list[ClientRead] = []
        self.last_write_us = 0
        self.probe_log: list[tuple[int, bool]] = []
        self.probes = 0
        self.handle(_REQ, lambda a, b: self._request(a))
        self.handle(_REPLY, lambda a, b: self._reply_arrived(a))
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
        super().on_start()
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

    def choose_command(self, client: _Client) -> tuple[dict[str, Any], Op]:
        """The CRDT mix: 40 % ``put``, 20 % ``incr`` (by 1 to 4), 40 % ``read``."""
        rng = self.rng
        key = f"k{rng.randrange(self.config.keys)}"
        roll = rng.random()
        client.counter += 1
        if roll < 0.4:
            value = f"{client.process}.{client.counter}"
            command: dict[str, Any] = {"op": "put", "key": key, "value": value}
            return command, Op(client.process, "invoke", "put", key, value)
        if roll < 0.6:
            amount = rng.randrange(1, 5)
            command = {"op": "incr", "key": key, "amount": amount}
            return command, Op(client.process, "invoke", "incr", key, amount)
        return {"op": "read", "key": key}, Op(client.process, "invoke", "read", key, None)

    def start_op(self, client: _Client, command: dict[str, Any], op: Op) -> None:
        """Send the command to the client's own replica."""
        client.pending = PendingOp(op, command, client.seq, self.now)
        self.retry(client)

    def retry(self, client: _Client) -> None:
        """Same replica, same (client, seq): a command is answered once."""
        p = client.pending
        assert p is not None
        self.push_lossy(_REQ, _Request(client.index, client.name, p.seq, p.command))
        self.arm_timeout(client)

    def trace_op(self, client: _Client, done: Op) -> None:
        """CRDT runs keep client completions out of the trace (messages say enough)."""

    def new_session(self, client: _Client) -> None:
        """A new identity; its values go on numbering from where the old one stopped."""
        counter = client.counter
        super().new_session(client)
        client.counter = counter

    def _request(self, req: _Request) -> None:
        client = self.clients[req.client]
        node = self.nodes[client.node]
        if not self.accepts(node, _REQ, req):
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
        if index is not None:
            self.push_lossy(_REPLY, _Reply(index, p.seq, value, record))

    def _reply_arrived(self, reply: _Reply) -> None:
        client = self.clients[reply.client]
        if client.pending is None or client.pending.seq != reply.seq:
            return
        if reply.record >= 0:
            self.writes[reply.record]["acknowledged"] = True
        self.complete(client, reply.result)

    def outcome(self, client: _Client, result: Any) -> Op:
        """A read returns the value and is kept, with its version, for the session checks."""
        assert client.pending is not None
        op = client.pending.op
        if op.f != "read" or isinstance(result, CommandRejected):
            return super().outcome(client, result)
        ts = result.get("ts") if isinstance(result, dict) else None
        stamp = HlcTimestamp.from_wire(ts) if ts is not None else None
        value = result.get("value") if isinstance(result, dict) else None
        self.reads.append(ClientRead(client.name, op.key, stamp, value, self.ids[client.node]))
        return Op(op.process, "ok", "read", op.key, value)

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
        self.close_history()
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
        return self.result(
            started,
            history=self.history,
            violation=None,
            invariant_checks={
                "convergence": self.probes + 1,
                "acknowledged-writes": len(acks),
                "monotonic-reads": len(self.reads),
            },
            leader_changes=0,
            terms=0,
            rejected=self.rejected,
            commit_index=0,
            properties=properties,
            property_violations=violations,
        )
