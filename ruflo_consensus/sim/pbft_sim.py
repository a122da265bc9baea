"""The PBFT backend in the deterministic simulator.

Every node runs a :class:`~ruflo_consensus.core.pbft.PbftCore`; ``--byzantine N`` of them
(default ``f``) are Byzantine, each with a behaviour drawn from ``--behaviours``
(:mod:`.byzantine`). Keys are derived from the seed, and Ed25519 signatures are
deterministic, so a seed replays bit for bit. The network and node faults are the
engine's; a crashed replica restarts from the state it persisted.

Clients sign their requests and send them to the primary they believe in; after a timeout
they broadcast them to every replica (which makes backups start their view-change timers);
a client accepts a result once ``f + 1`` replicas sent matching signed replies. A client
that gives up records ``info`` and continues under a new identity (a new key), as in the
Raft simulation. The clients' history is checked for linearizability with the ``kv``
model; :class:`~.pbft_invariants.PbftInvariants` checks agreement, checkpoint agreement and
state transfers while the run goes, and liveness after the network healed at the end.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..canonical import canonical_bytes
from ..check.history import Op
from ..core.base import Message, ProtocolError, Role
from ..core.pbft import (
    Keyring,
    PbftConfig,
    PbftCore,
    PbftFrame,
    PbftReady,
    Signed,
    Signer,
    auth_stats,
    clear_verify_cache,
    decode_result,
    open_envelope,
    quorum_size,
    sign_request,
)
from ..core.pbft.messages import ReadReply, Reply
from ..statemachine import KVStateMachine
from ..topology import Topology
from .byzantine import Adversary, Behaviour, make_behaviour
from .config import SimConfig
from .engine import FIRST_BACKEND_KIND, EngineNode, SimResult
from .invariants import InvariantViolation
from .kv_workload import ClientSimEngine, KVClient, PendingOp
from .pbft_invariants import Batch, PbftInvariants

__all__ = ["SIM_PBFT_CONFIG", "PbftSimulation"]

_REQ, _REPLY, _READ_TIMEOUT = range(FIRST_BACKEND_KIND, FIRST_BACKEND_KIND + 3)
_FAST_READ_US = 30_000  # a fast read that has no q matching replies by then goes ordered


def _kv_read_only(command: Any) -> bool:
    return isinstance(command, dict) and command.get("op") == "get"


SIM_PBFT_CONFIG = PbftConfig(
    checkpoint_interval=16,
    window=64,
    max_inflight=2,
    view_change_ticks=15,
    max_backoff=4,
    status_ticks=5,
)
"""The replicas' settings in simulations: checkpoints and the window scaled down so that a
run of a few simulated seconds crosses several of them."""


@dataclass(slots=True)
class _Replica:
    core: PbftCore | None
    durable: bytes | None = None
    behaviour: Behaviour | None = None


@dataclass(slots=True, kw_only=True)
class _Pending(PendingOp):
    """``seq`` is the request's timestamp ``t``; ``votes``: the replicas per reply result."""

    env: Signed
    fast: bool = False
    votes: dict[bytes, list[str]] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class _Client(KVClient[_Pending]):
    signer: Signer
    view: int = 0  # the view the client believes in (its primary: view mod n)


def _pbft_trace(m: Message) -> str:
    # a signature names its message: Ed25519 is deterministic, so equal runs give equal keys
    if isinstance(m, PbftFrame) and m.items:
        return f"{len(m.items)} {m.items[0].sig[:6].hex()}"
    return type(m).__name__


class PbftSimulation(ClientSimEngine[_Client]):
    """One deterministic run of a PBFT cluster with Byzantine replicas, clients and a nemesis.

    ``pbft_config`` replaces the replicas' settings (default :data:`SIM_PBFT_CONFIG`).
    """

    def __init__(
        self,
        config: SimConfig,
        pbft_config: PbftConfig | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.pbft_config = pbft_config or SIM_PBFT_CONFIG
        super().__init__(config, topology or config.build_topology(), self.pbft_config.tick_ms)
        self.f, self.q = quorum_size(len(self.ids))
        # The read-only fast path is linearizable only if writes, too, wait for q matching
        # replies (f + 1 otherwise): see docs/pbft.md.
        self.fast_reads = config.reads == "fast"
        self.accept_at = self.q if self.fast_reads else self.f + 1
        self.fast_reads_done = 0
        self.fast_reads_fell_back = 0
        self.secret = f"ruflo-pbft-sim/{config.seed}".encode()
        self.signers = {i: Signer.derived(self.secret, i) for i in self.ids}
        self.keyring = Keyring({i: s.public_key for i, s in self.signers.items()})
        count = self.f if config.byzantine is None else config.byzantine
        byzantine = sorted(self.rng.sample(range(len(self.ids)), count))
        self.byzantine = {self.ids[i]: "" for i in byzantine}
        self.honest = [i for i in self.ids if i not in self.byzantine]
        self.adversary = Adversary(
            {i: self.signers[i] for i in self.byzantine},
            tuple(self.ids),
            self.honest,
            self.f,
            lambda: [c.name for c in self.clients],
        )
        self.reps = [_Replica(None) for _ in self.nodes]
        for node in self.nodes:
            rep = self.reps[node.index]
            if node.id in self.byzantine:
                name = config.behaviours[self.rng.randrange(len(config.behaviours))]
                self.byzantine[node.id] = name
                rep.behaviour = make_behaviour(
                    name,
                    node.id,
                    lambda r=rep: r.core,  # type: ignore[misc]
                    self.adversary,
                    random.Random(self.rng.getrandbits(64)),
                )
            rep.core = self._make_core(node)
        self.invariants = PbftInvariants(set(self.honest))
        self.by_name: dict[str, _Client] = {}
        for i in range(config.clients):
            self.clients.append(_Client(i, i, f"c{i}", signer=self._signer_for(f"c{i}")))
            self.by_name[f"c{i}"] = self.clients[i]
        self.views_installed: set[int] = set()
        self.client_rejected: dict[str, int] = {}
        # counters of honest cores that crashed (a restarted core counts from zero)
        self.core_rejected: dict[str, int] = {}
        self.core_counters: dict[str, int] = {}
        self.handle(_REQ, lambda a, b: self._request_arrives(a, b))
        self.handle(_REPLY, lambda a, b: self._reply_arrives(a))
        self.handle(_READ_TIMEOUT, lambda a, b: self._read_timeout(a, b))

    # ------------------------------------------------------------------ nodes

    def _make_core(self, node: EngineNode) -> PbftCore:
        rep = self.reps[node.index]
        return PbftCore(
            node.id,
            self.ids,
            self.signers[node.id],
            self.keyring,
            KVStateMachine(),
            self.pbft_config,
            rep.durable,
            read_only=_kv_read_only if self.fast_reads else None,
        )

    def core_of(self, node: EngineNode) -> PbftCore | None:
        """The replica's core (None while crashed)."""
        return self.reps[node.index].core

    def message_key(self, message: Message) -> str:
        """PBFT frames in the trace: the kind, view and sequence number of what they carry."""
        return _pbft_trace(message)

    def on_message(self, node: EngineNode, message: Message) -> None:
        """Step the core (through the Byzantine filter, if any); the core counts rejections."""
        rep = self.reps[node.index]
        assert rep.core is not None
        if rep.behaviour is not None and isinstance(message, PbftFrame):
            filtered = rep.behaviour.incoming(message)
            if filtered is None:
                return
            message = filtered
        with contextlib.suppress(ProtocolError):  # counted per envelope in core.rejected
            rep.core.step(message)
        self.process_ready(node)

    def on_tick(self, node: EngineNode) -> None:
        """Tick the core; a Byzantine replica's behaviour may inject messages too."""
        rep = self.reps[node.index]
        assert rep.core is not None
        rep.core.tick()
        if rep.behaviour is not None:
            for m in rep.behaviour.on_tick():
                self._route(m)
        self.process_ready(node)

    def on_queued(self, node: EngineNode, kind: int, item: Any) -> None:
        """A client request that waited while the replica was paused."""
        self._request_arrives(*item)

    def crash_node(self, node: EngineNode) -> None:
        """Lose the core's memory; its persisted state stays."""
        rep = self.reps[node.index]
        if rep.core is not None and rep.behaviour is None:
            self._fold_counters(rep.core)
        rep.core = None

    def _fold_counters(self, core: PbftCore) -> None:
        for k, v in core.rejected.items():
            self.core_rejected[k] = self.core_rejected.get(k, 0) + v
        for k, v in core.counters.items():
            self.core_counters[k] = self.core_counters.get(k, 0) + v

    def restart_node(self, node: EngineNode) -> None:
        """Rebuild the replica from what it persisted, then replay its committed batches."""
        rep = self.reps[node.index]
        rep.core = self._make_core(node)
        core = rep.core
        self.trace(f"{node.id} restart view {core.view} stable {core.stable_checkpoint[0]}")
        self.process_ready(node)

    def process_ready(self, node: EngineNode) -> None:
        """Persist, send (through the Byzantine filter), then check what was executed."""
        rep = self.reps[node.index]
        core = rep.core
        assert core is not None
        if not core.has_ready():
            return
        rd = core.ready()
        assert isinstance(rd, PbftReady)
        if rd.persist.state is not None:
            rep.durable = rd.persist.state
        messages = rd.messages
        if rep.behaviour is not None:
            messages = rep.behaviour.outgoing(messages)
        for m in messages:
            self._route(m)
        honest = rep.behaviour is None
        for rc in rd.role_changes:
            self.trace(f"{rc.node} {rc.role} view {rc.term}")
            if honest and rc.role is not Role.VIEW_CHANGING and rc.term > 0:
                self.views_installed.add(rc.term)
        if not honest:
            return
        if rd.committed:
            self._check_executed(node, rd)
        for seq, digest in rd.checkpoints:
            self.invariants.on_checkpoint(node.id, seq, digest, self.now)
        for seq, digest in rd.state_transfers:
            self.trace(f"{node.id} state transfer to {seq}")
            self.invariants.on_transfer(node.id, seq, digest, self.now)

    def _check_executed(self, node: EngineNode, rd: PbftReady) -> None:
        batch: list[tuple[str | None, int, bytes]] = []
        seq = rd.committed[0].entry.index
        for c in [*rd.committed, None]:
            if c is None or c.entry.index != seq:
                self.invariants.on_execute(node.id, seq, tuple(batch), self.now)
                if c is None:
                    break
                batch, seq = [], c.entry.index
            p = c.entry.proposal
            if p is not None:
                batch.append((p.client, p.seq, canonical_bytes(p.command)))

    def _route(self, m: Message) -> None:
        if m.dst in self.by_id:
            self.send(m)
        elif isinstance(m, PbftFrame):
            self.push_lossy(_REPLY, m)

    # ------------------------------------------------------------------ clients

    def _signer_for(self, name: str) -> Signer:
        """A client identity's key (derived from the seed), registered with the replicas."""
        signer = Signer.derived(self.secret, name)
        self.keyring.register_client(name, signer.public_key)
        return signer

    def new_session(self, client: _Client) -> None:
        """A new identity comes with a new key; it keeps the view the old one believed in."""
        self.by_name.pop(client.name, None)
        super().new_session(client)
        client.signer = self._signer_for(client.name)
        self.by_name[client.name] = client

    def start_op(self, client: _Client, command: dict[str, Any], op: Op) -> None:
        """Sign the request and send it to the primary (a fast read: to every replica)."""
        if self.fast_reads and _kv_read_only(command):
            env = sign_request(client.signer, client.seq, command, read_only=True)
            client.pending = _Pending(op, command, client.seq, self.now, env=env, fast=True)
            for index in range(len(self.ids)):
                self.push_lossy(_REQ, index, PbftFrame(client.name, self.ids[index], (env,)))
            self.push(self.now + _FAST_READ_US, _READ_TIMEOUT, client.index, client.seq)
            return
        env = sign_request(client.signer, client.seq, command)
        client.pending = _Pending(op, command, client.seq, self.now, env=env)
        self._send_request(client, broadcast=False)

    def _read_timeout(self, index: int, t: int) -> None:
        """No q matching fast-read replies in time: send the read through the log."""
        client = self.clients[index]
        p = client.pending
        if p is None or p.seq != t or not p.fast:
            return
        self.fast_reads_fell_back += 1
        p.fast = False
        p.votes.clear()
        p.env = sign_request(client.signer, p.seq, p.command)
        self._send_request(client, broadcast=False)

    def _send_request(self, client: _Client, broadcast: bool) -> None:
        p = client.pending
        assert p is not None
        targets = range(len(self.ids)) if broadcast else [client.view % len(self.ids)]
        for index in targets:
            self.push_lossy(_REQ, index, PbftFrame(client.name, self.ids[index], (p.env,)))
        self.arm_timeout(client)

    def _request_arrives(self, index: int, frame: PbftFrame) -> None:
        node = self.nodes[index]
        if not self.accepts(node, _REQ, (index, frame)):
            return
        self.trace(f"{frame.src}>{node.id} req")
        self.on_message(node, frame)

    def _reply_arrives(self, frame: PbftFrame) -> None:
        client = self.by_name.get(frame.dst)
        if client is None or client.pending is None:
            return
        p = client.pending
        for env in frame.items:
            try:
                reply = open_envelope(env, self.keyring)
            except ProtocolError as exc:
                self.client_rejected[exc.reason] = self.client_rejected.get(exc.reason, 0) + 1
                continue
            if type(reply) is ReadReply and p.fast:
                key = msgpack.packb([reply.seq, reply.result], use_bin_type=True)
            elif type(reply) is Reply and not p.fast:
                key = msgpack.packb(reply.result, use_bin_type=True)
            else:
                continue
            if reply.client != client.name or reply.t != p.seq:
                continue
            voters = p.votes.setdefault(key, [])
            if reply.signer in voters:
                continue
            voters.append(reply.signer)
            if len(voters) > self.f:
                client.view = max(client.view, reply.view)
            if len(voters) == self.accept_at:
                self.fast_reads_done += p.fast
                self.complete(client, decode_result(reply.result))
                return

    def retry(self, client: _Client) -> None:
        """No f + 1 matching replies in time: broadcast, so backups suspect the primary."""
        assert client.pending is not None
        client.pending.attempt += 1
        self._send_request(client, broadcast=True)

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run to the end (or the first violation); then check liveness after GST."""
        started = time.perf_counter()
        stats = auth_stats()
        stats.reset()
        clear_verify_cache()  # this run's counters must not depend on earlier runs
        violation: InvariantViolation | None = None
        try:
            self.run_loop()
            grace = int(min(0.5, self.config.quiet_tail_s / 2) * 1e6)
            alive = {
                n.id: rep.core.last_executed
                for n, rep in zip(self.nodes, self.reps, strict=True)
                if rep.core is not None and n.up and not n.paused and rep.behaviour is None
            }
            self.invariants.check_liveness(alive, self.end_us - grace, self.now)
        except InvariantViolation as exc:
            violation = exc
        self.close_history()
        honest_cores = [
            rep.core for rep in self.reps if rep.core is not None and rep.behaviour is None
        ]
        for core in honest_cores:
            self._fold_counters(core)
        rejected, counters = self.core_rejected, self.core_counters
        for k, v in self.client_rejected.items():
            rejected[f"client {k}"] = v
        injected = sum(r.behaviour.injected for r in self.reps if r.behaviour is not None)
        properties: dict[str, Any] = {
            "byzantine replicas": dict(self.byzantine) or "none",
            "views installed": len(self.views_installed),
            "view changes started (honest)": counters.get("view-changes", 0),
            "stable checkpoints (honest)": counters.get("checkpoints-stable", 0),
            "state transfers": counters.get("state-transfers", 0),
            "commit certificates used": counters.get("commit-certs-used", 0),
            "batches ordered": counters.get("batches", 0),
            "requests executed (honest)": counters.get("executed-requests", 0),
            "messages the adversary forged, altered or dropped": injected,
            "fast reads (done / sent through the log)": (
                f"{self.fast_reads_done} / {self.fast_reads_fell_back}"
                if self.fast_reads
                else "off"
            ),
            "signatures": {
                "made": stats.signs,
                "verified": stats.verifications,
                "cache hits": stats.cache_hits,
                "failed": stats.failures,
            },
        }
        return self.result(
            started,
            history=self.history,
            violation=violation,
            invariant_checks=dict(self.invariants.checks),
            leader_changes=len(self.views_installed),
            terms=max((c.view for c in honest_cores), default=0),
            rejected=rejected,
            commit_index=max((c.last_executed for c in honest_cores), default=0),
            properties=properties,
        )

    @property
    def executed_batches(self) -> dict[int, Batch]:
        """What the honest replicas executed, by sequence number (for tests)."""
        return {seq: batch for seq, (batch, _, _) in self.invariants.executed.items()}
