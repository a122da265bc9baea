"""A deterministic federation workload and the checks to run on its replicas.

:class:`FederationWorkload` yields commands for :class:`FederationStateMachine` from one seed:
joins and handshakes first, then a mix over all six machines (sends with delegation budgets,
trust records, heartbeats and session renewals, breaker outcomes and operator moves, Q-table
updates, audit records, proposals and signed votes, ticks) with strictly increasing
timestamps, and a share of invalid commands (bad budgets, forged or malformed signatures,
unknown peers, ineligible voters, unknown fields, out-of-range values) that every replica must
reject identically. Keys are derived from the seed, so two workloads with the same seed yield
byte-identical commands.

:func:`check_cross_replica` takes the final snapshots of several replicas and reports what is
wrong: internal invariants of each replica (audit chain, spend within caps, proposal outcomes
consistent with their tallies, registry/breaker agreement), snapshots that differ although the
replicas applied the same number of commands, audit records that differ at the same sequence
number, and proposals decided differently.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.signing

from ruflo_consensus.check.encoded import state_bytes
from ruflo_consensus.check.history import Op
from ruflo_consensus.federation.errors import BadSnapshot
from ruflo_consensus.federation.machine import FederationStateMachine
from ruflo_consensus.federation.proposals import (
    CONSENSUS_MESSAGE_TYPES,
    ProposalStatus,
    make_proposal_command,
    make_vote_command,
)
from ruflo_consensus.federation.qtable import DEFAULT_AGENT_TYPES, state_key, task_embedding
from ruflo_consensus.federation.registry import make_handshake_command, make_join_command
from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.federation.trust import make_privileged_approval_command
from ruflo_consensus.statemachine import CommandError, CommandRejected

if TYPE_CHECKING:  # the simulator's interface, for the type checker only (no runtime import)
    from ruflo_consensus.sim.config import SimConfig
    from ruflo_consensus.sim.kv_workload import KVClient
    from ruflo_consensus.sim.workload import ReplicaState, SimWorkload

__all__ = [
    "FederationSimWorkload",
    "FederationWorkload",
    "check_cross_replica",
    "check_replica",
    "federation_sim_workload",
    "replay",
]

_TASKS = (
    "write unit tests for the parser",
    "review the pull request for the cache layer",
    "design the storage architecture",
    "research vector databases",
    "optimize the hot loop in the tokenizer",
    "debug the flaky websocket reconnect",
    "document the federation api",
    "implement the budget ledger",
    "refactor the router module",
    "benchmark the raft simulator",
)


def _key(seed: int, name: str) -> nacl.signing.SigningKey:
    digest = hashlib.blake2b(f"ruflo-workload:{seed}:{name}".encode(), digest_size=32).digest()
    return nacl.signing.SigningKey(digest)


@dataclass
class _PeerModel:
    key: nacl.signing.SigningKey
    joined: bool = False
    evicted: bool = False
    session_expires: int = 0
    last_heartbeat: int = 0
    sessions: int = 0


class FederationWorkload:
    """Seeded generator of federation commands (valid and, at ``invalid_ratio``, invalid)."""

    def __init__(
        self,
        seed: int,
        peers: int | Sequence[str] = 5,
        *,
        start_ms: int = 1_700_000_000_000,
        invalid_ratio: float = 0.1,
        node_ids: Sequence[str] = ("n1", "n2", "n3"),
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        names = [f"peer-{i}" for i in range(peers)] if isinstance(peers, int) else list(peers)
        if not names:
            raise ValueError("a workload needs at least one peer")
        self.peer_ids = names
        self.models = {p: _PeerModel(key=_key(seed, p)) for p in names}
        self.approver_id = "human-approver"
        self.approver_key = _key(seed, self.approver_id)
        self.now = start_ms
        self.invalid_ratio = invalid_ratio
        self.node_ids = list(node_ids)
        self.delegations: list[str] = []
        self.proposals: list[tuple[str, int]] = []
        self.counter = 0

    # ------------------------------------------------------------------ setup

    def approvers(self) -> dict[str, bytes]:
        """The human approver keys the replicas must be configured with."""
        return {self.approver_id: public_key_bytes(self.approver_key)}

    def new_machine(self) -> FederationStateMachine:
        """A fresh replica configured for this workload."""
        return FederationStateMachine(approvers=self.approvers())

    def signing_key(self, peer: str) -> nacl.signing.SigningKey:
        """The signing key of a workload peer."""
        return self.models[peer].key

    # --------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_command()

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` commands."""
        return [self.next_command() for _ in range(n)]

    def next_command(self) -> dict[str, Any]:
        """One more command, with a timestamp above all previous ones."""
        self.now += self.rng.randint(20, 2_500)
        self.counter += 1
        cmd = self._choose()
        cmd.setdefault("node", self.rng.choice(self.node_ids))
        return cmd

    # ----------------------------------------------------------------- choice

    def _choose(self) -> dict[str, Any]:
        for peer in self.peer_ids:
            if not self.models[peer].joined:
                return self._join(peer)
        for peer in self.peer_ids:
            m = self.models[peer]
            if not m.evicted and self.now >= m.session_expires - 120_000:
                return self._handshake(peer)
        for peer in self.peer_ids:
            m = self.models[peer]
            if not m.evicted and self.now - m.last_heartbeat > 20_000:
                m.last_heartbeat = self.now
                return {"op": "registry.heartbeat", "peer": peer, "now": self.now}
        if self.rng.random() < self.invalid_ratio:
            return self._invalid()
        kinds = (
            ("send", 24),
            ("record", 10),
            ("open", 4),
            ("close", 2),
            ("outcome", 6),
            ("qtable", 12),
            ("audit", 5),
            ("propose", 3),
            ("vote", 12),
            ("tick", 3),
            ("operator", 4),
            ("grant", 1),
        )
        kind = self.rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        method = getattr(self, f"_gen_{kind}")
        cmd: dict[str, Any] = method()
        return cmd

    def _peer(self) -> str:
        return self.rng.choice(self.peer_ids)

    def _join(self, peer: str) -> dict[str, Any]:
        m = self.models[peer]
        m.joined = True
        agents = self.rng.sample(DEFAULT_AGENT_TYPES, 3)
        return make_join_command(m.key, peer, f"wss://{peer}.example:443", agents, self.now)

    def _handshake(self, peer: str) -> dict[str, Any]:
        m = self.models[peer]
        m.sessions += 1
        m.session_expires = self.now + 3_600_000
        m.last_heartbeat = self.now
        nonce = self.rng.randbytes(16)
        issued = self.now - self.rng.randint(0, 5_000)
        return make_handshake_command(m.key, peer, f"{peer}-s{m.sessions}", nonce, issued, self.now)

    def _gen_send(self) -> dict[str, Any]:
        cmd: dict[str, Any] = {
            "op": "federation.send",
            "peer": self._peer(),
            "message_type": self.rng.choice(("task-assignment", "memory-query", "context-share")),
            "size_bytes": self.rng.randint(10, 50_000),
            "now": self.now,
        }
        if self.delegations and self.rng.random() < 0.7:
            cmd["delegation"] = self.rng.choice(self.delegations)
            cmd["tokens"] = self.rng.randint(0, 3_000)
            cmd["usd"] = round(self.rng.uniform(0, 0.03), 4)
        return cmd

    def _gen_record(self) -> dict[str, Any]:
        cmd: dict[str, Any] = {
            "op": "trust.record",
            "peer": self._peer(),
            "received": self.rng.randint(0, 40),
            "sent": self.rng.randint(0, 40),
            "uptime": round(self.rng.uniform(0.85, 1.0), 3),
            "now": self.now,
        }
        roll = self.rng.random()
        if roll < 0.02:
            cmd["integrity_failures"] = 1
        elif roll < 0.06:
            cmd["threats"] = 1
        return cmd

    def _gen_open(self) -> dict[str, Any]:
        name = f"d{self.counter}"
        self.delegations = [*self.delegations[-7:], name]
        budget: dict[str, Any] = {"max_hops": self.rng.randint(1, 8)}
        if self.rng.random() < 0.8:
            budget["max_tokens"] = self.rng.randint(1_000, 20_000)
        if self.rng.random() < 0.8:
            budget["max_usd"] = round(self.rng.uniform(0.05, 2.0), 2)
        return {"op": "budget.open", "delegation": name, "budget": budget, "now": self.now}

    def _gen_close(self) -> dict[str, Any]:
        if not self.delegations:
            return self._gen_open()
        name = self.delegations.pop(self.rng.randrange(len(self.delegations)))
        return {"op": "budget.close", "delegation": name, "now": self.now}

    def _gen_outcome(self) -> dict[str, Any]:
        return {
            "op": "budget.outcome",
            "peer": self._peer(),
            "ok": self.rng.random() < 0.75,
            "now": self.now,
        }

    def _gen_qtable(self) -> dict[str, Any]:
        task = self.rng.choice(_TASKS)
        emb = task_embedding(task)
        nxt = task_embedding(self.rng.choice(_TASKS))
        return {
            "op": "qtable.update",
            "state": state_key(emb),
            "action": self.rng.choice(DEFAULT_AGENT_TYPES),
            "reward": round(self.rng.uniform(-1.0, 1.0), 3),
            "next_state": state_key(nxt) if self.rng.random() < 0.7 else None,
            "embedding": emb.astype("<f4").tobytes(),
            "now": self.now,
        }

    def _gen_audit(self) -> dict[str, Any]:
        pii = self.rng.random() < 0.3
        return {
            "op": "audit.append",
            "event_type": self.rng.choice(("pii-scan", "message-received", "policy-check")),
            "category": self.rng.choice(("pii", "message", "security")),
            "severity": self.rng.choice(("info", "warn", "error")),
            "source": self._peer(),
            "pii_found": pii,
            "pii_types": ["email"] if pii else [],
            "pii_action": "redact" if pii else None,
            "latency_ms": self.rng.randint(1, 500),
            "compliance_mode": self.rng.choice(("none", "hipaa", "gdpr")),
            "content": "raw text with alice@example.com" if pii else None,
            "metadata": {"original": "alice@example.com"} if pii else {},
            "now": self.now,
        }

    def _gen_propose(self) -> dict[str, Any]:
        pid = f"p{self.counter}"
        self.proposals = [(p, exp) for p, exp in self.proposals if exp > self.now][-5:]
        self.proposals.append((pid, self.now + 30_000))
        mtype = self.rng.choice(sorted(CONSENSUS_MESSAGE_TYPES))
        return make_proposal_command(
            pid, mtype, {"change": self.counter}, self.now, proposer=self._peer()
        )

    def _gen_vote(self) -> dict[str, Any]:
        live = [p for p, exp in self.proposals if exp > self.now]
        if not live:
            return self._gen_propose()
        voter = self._peer()
        return make_vote_command(
            self.models[voter].key,
            self.rng.choice(live),
            self.rng.random() < 0.7,
            self.now,
            voter=voter,
        )

    def _gen_tick(self) -> dict[str, Any]:
        return {"op": self.rng.choice(("federation.tick", "proposals.tick")), "now": self.now}

    def _gen_operator(self) -> dict[str, Any]:
        peer = self._peer()
        m = self.models[peer]
        roll = self.rng.random()
        if m.evicted:
            m.evicted = False
            m.session_expires = 0
            return {"op": "registry.reactivate", "peer": peer, "now": self.now}
        if roll < 0.15:
            m.evicted = True
            return {"op": "registry.evict", "peer": peer, "reason": "drill", "now": self.now}
        if roll < 0.3:
            return {"op": "budget.suspend", "peer": peer, "now": self.now}
        if roll < 0.7:
            return {"op": "budget.reactivate", "peer": peer, "now": self.now}
        return {"op": "trust.reinstate", "peer": peer, "now": self.now}

    def _gen_grant(self) -> dict[str, Any]:
        return make_privileged_approval_command(
            self.approver_key, self.approver_id, self._peer(), self.now
        )

    # ---------------------------------------------------------------- invalid

    def _invalid(self) -> dict[str, Any]:
        peer = self._peer()
        choice = self.rng.randrange(10)
        if choice == 0:
            bad = self.rng.choice((float("nan"), -1, 2.5, 65, float("inf"), "8"))
            return {
                "op": "budget.open",
                "delegation": f"bad{self.counter}",
                "budget": {"max_hops": bad},
                "now": self.now,
            }
        if choice == 1:
            return {"op": "federation.send", "peer": "stranger", "now": self.now}
        if choice == 2:
            cmd = self._gen_vote()
            if cmd["op"] == "proposals.vote":
                sig = bytearray(cmd["signature"])
                sig[self.rng.randrange(64)] ^= 0xFF
                cmd["signature"] = bytes(sig)
            return cmd
        if choice == 3:
            cmd = self._gen_vote()
            if cmd["op"] == "proposals.vote":
                cmd["signature"] = cmd["signature"][:10]
            return cmd
        if choice == 4:
            outsider = _key(self.seed, "outsider")
            live = [p for p, exp in self.proposals if exp > self.now] or ["p-none"]
            return make_vote_command(outsider, live[0], True, self.now, voter="outsider")
        if choice == 5:
            return {
                "op": "qtable.update",
                "state": "s",
                "action": "coder",
                "reward": 2.0,
                "now": self.now,
            }
        if choice == 6:
            return {"op": "trust.record", "peer": peer, "sent": 1, "maxHops": 3, "now": self.now}
        if choice == 7:
            # A manifest claiming a member's key but signed by someone else.
            forged = make_join_command(
                _key(self.seed, "forger"), f"{peer}-clone", "wss://evil", ["coder"], self.now
            )
            forged["manifest"]["public_key"] = public_key_bytes(self.models[peer].key)
            return forged
        if choice == 8:
            return {"op": "audit.append", "event_type": "x", "category": "gossip", "now": self.now}
        return {"op": "registry.teleport", "peer": peer, "now": self.now}


# ------------------------------------------------------------- in the simulator


class FederationSimWorkload:
    """The federation workload as the Raft simulation runs it (``--workload federation``).

    It implements the simulator's ``SimWorkload`` interface (the simulator does not import
    the federation; the CLI hands :func:`federation_sim_workload` to it). Commands come from a
    :class:`FederationWorkload`; a command is ``ok`` unless the replicas rejected it, and
    rejections are counted by code; at the end of a clean run :func:`check_cross_replica`
    judges the live replicas.
    """

    name = "federation"

    def __init__(self, seed: int, peers: int | Sequence[str], node_ids: Sequence[str]) -> None:
        self.commands = FederationWorkload(seed, peers=peers, node_ids=node_ids)
        self.rejected: dict[str, int] = {}

    def new_machine(self) -> FederationStateMachine:
        """A fresh replica configured with the workload's approver keys."""
        return self.commands.new_machine()

    def next_command(self, client: KVClient[Any], rng: random.Random) -> tuple[dict[str, Any], Op]:
        """The workload's next command (from its own seeded generator, not ``rng``)."""
        command = self.commands.next_command()
        return command, Op(client.process, "invoke", "fed", command["op"])

    def outcome(self, op: Op, result: Any, client: KVClient[Any]) -> Op:
        """``fail`` for a rejected command (counted by its code), else ``ok``."""
        if isinstance(result, CommandRejected):
            self.rejected[result.code] = self.rejected.get(result.code, 0) + 1
            return Op(op.process, "fail", op.f, op.key, op.value)
        return Op(op.process, "ok", op.f, op.key, None)

    def check_replicas(self, replicas: Sequence[ReplicaState]) -> tuple[dict[str, Any], list[str]]:
        """Cross-replica properties of the live replicas (see :func:`check_cross_replica`).

        Replicas that applied the same number of entries must also hold byte-identical
        snapshots; the most advanced replica's machine gives the counts reported.
        """
        snapshots = [r.machine.snapshot() for r in replicas]
        violations = check_cross_replica(snapshots, require_equal=False)
        by_applied: dict[int, set[bytes]] = {}
        for replica, snap in zip(replicas, snapshots, strict=True):
            by_applied.setdefault(replica.applied, set()).add(snap)
        for applied, snaps in sorted(by_applied.items()):
            if len(snaps) > 1:
                violations.append(f"replicas that applied {applied} entries hold different states")
        fed = max(replicas, key=lambda r: r.applied).machine
        assert isinstance(fed, FederationStateMachine)
        decided = [p for p in fed.proposals.proposals.values() if p.status.value != "pending"]

        def holds(*needles: str) -> bool:
            return not any(n in v for v in violations for n in needles)

        properties: dict[str, Any] = {
            "replicas compared": len(snapshots),
            "replicas at the same position agree": holds("different states", "differ in"),
            "no spend above a cap": holds("above cap", "hops >"),
            "identical trust levels": holds(" vs ", "UNTRUSTED with"),
            "one outcome per proposal": holds("proposal "),
            "audit chain verifies": holds("audit"),
            "commands accepted": fed.accepted,
            "commands rejected by code": dict(sorted(self.rejected.items())),
            "proposals decided": len(decided),
            "peers": len(fed.registry.peers),
        }
        return properties, violations


def federation_sim_workload(
    config: SimConfig, rng: random.Random, node_ids: Sequence[str]
) -> SimWorkload:
    """The simulator's workload factory for ``--workload federation``.

    Draws the workload's seed from the simulation's generator (32 bits, once), and uses
    ``config.keys`` as the number of federation peers.
    """
    return FederationSimWorkload(rng.getrandbits(32), peers=config.keys, node_ids=node_ids)


# --------------------------------------------------------------------- checks


def replay(
    commands: Iterable[Any], machine: FederationStateMachine | None = None
) -> tuple[FederationStateMachine, list[Any]]:
    """Apply ``commands`` in order; rejected ones yield :class:`CommandRejected` results."""
    fed = machine if machine is not None else FederationStateMachine()
    results: list[Any] = []
    for command in commands:
        try:
            results.append(fed.apply(command))
        except CommandError as exc:
            results.append(CommandRejected(exc.code, exc.message))
    return fed, results


def check_replica(machine: FederationStateMachine) -> list[str]:
    """Internal invariants of one replica (``FederationStateMachine.invariant_violations``)."""
    return machine.invariant_violations()


def check_cross_replica(snapshots: Sequence[bytes], *, require_equal: bool = True) -> list[str]:
    """Report violations across the final snapshots of several replicas.

    With ``require_equal`` (all replicas applied the whole log) every snapshot must be equal;
    without it, replicas may lag, and only replicas that accepted the same number of
    commands must be equal. Always: each replica's invariants hold (audit chain verifies,
    no delegation spent above its cap, each proposal's outcome matches its tally and is never
    both approved and rejected), audit records with the same sequence number have the same
    hash, a proposal decided on two replicas has the same outcome, and replicas with the same
    number of accepted commands agree on every peer's trust level.
    """
    out: list[str] = []
    machines: list[tuple[int, FederationStateMachine]] = []
    for i, snap in enumerate(snapshots):
        fed = FederationStateMachine()
        try:
            fed.restore(snap)
        except BadSnapshot as exc:
            out.append(f"replica {i}: cannot restore snapshot: {exc.message}")
            continue
        machines.append((i, fed))
        out.extend(f"replica {i}: {v}" for v in fed.invariant_violations())
    if require_equal and len(set(snapshots)) > 1:
        out.append(f"replicas reached {len(set(snapshots))} different states")
    groups: dict[int, list[tuple[int, FederationStateMachine]]] = {}
    for i, fed in machines:
        groups.setdefault(fed.accepted, []).append((i, fed))
    for accepted in sorted(groups):
        group = groups[accepted]
        base_i, base = group[0]
        base_wire = base.to_wire()
        for i, fed in group[1:]:
            wire = fed.to_wire()
            for part in sorted(base_wire):
                if state_bytes(wire.get(part)) != state_bytes(base_wire[part]):
                    out.append(
                        f"replicas {base_i} and {i} accepted {accepted} commands but differ in "
                        f"{part}"
                    )
            for peer in sorted(set(base.trust.peers) | set(fed.trust.peers)):
                a, b = base.trust.level(peer), fed.trust.level(peer)
                if a != b:
                    out.append(f"replicas {base_i} and {i}: peer {peer} is {a!r} vs {b!r}")
    audit_hash: dict[int, tuple[int, bytes]] = {}
    outcome: dict[str, tuple[int, str]] = {}
    for i, fed in machines:
        for record in fed.audit.records:
            seen = audit_hash.setdefault(record["seq"], (i, record["hash"]))
            if seen[1] != record["hash"]:
                out.append(f"replicas {seen[0]} and {i} differ at audit record {record['seq']}")
        for pid, proposal in sorted(fed.proposals.proposals.items()):
            if proposal.status == ProposalStatus.PENDING:
                continue
            first = outcome.setdefault(pid, (i, proposal.status.value))
            if first[1] != proposal.status.value:
                out.append(
                    f"proposal {pid}: {first[1]} on replica {first[0]} but "
                    f"{proposal.status.value} on replica {i}"
                )
    return out
