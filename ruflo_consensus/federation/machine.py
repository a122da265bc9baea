"""``FederationStateMachine``: the six federation machines behind one replicated log.

Commands are routed by the namespace of their ``op`` (``registry.*``, ``trust.*``,
``budget.*``, ``qtable.*``, ``audit.*``, ``proposals.*``, ``federation.*``). Rules that span
machines live here:

* ``registry.join`` verifies the signed manifest and starts the peer VERIFIED in the trust
  ledger and ACTIVE in the breaker; ``registry.handshake`` opens a session and makes a
  VERIFIED peer ATTESTED.
* ``federation.send`` (and ``budget.hop``) checks, in the spec's inbound order: peer known,
  peer not suspended/evicted (``PEER_SUSPENDED`` / ``PEER_EVICTED``), payload valid, then the
  trust gate ``can(peer, "send")`` (``NOT_AUTHORIZED``), then the delegation's hop limit and
  budget; it records the message in the trust ledger and the spend in the breaker.
* Eviction and reactivation move the registry and the breaker together; a breaker's
  automatic eviction (24 h suspended) evicts the peer in the registry too.
* Votes come from the electorate of ATTESTED-or-above, ACTIVE peers with a live session when
  the proposal was created, who are still eligible when they vote.
* Significant events (joins, handshakes, sends, trust changes and drops, breaker moves,
  proposal outcomes) are appended to the hash-chained audit log automatically.

Every part is planned (validated) before any part is committed, so a rejected command leaves
the whole federation state byte-for-byte unchanged. Time-driven transitions (expiries, the
24 h eviction) are applied after each accepted command, or by ``federation.tick``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.federation.audit import RETENTION_MS, AuditLog
from ruflo_consensus.federation.budget import BreakerPolicy, BreakerState, BudgetLedger
from ruflo_consensus.federation.errors import (
    BadArgument,
    BadCommand,
    BadSnapshot,
    InvalidTransition,
    NotAuthorized,
    PeerEvicted,
    PeerSuspended,
    TooLarge,
    UnknownOp,
)
from ruflo_consensus.federation.proposals import (
    MESSAGE_TYPES,
    ProposalBook,
    ProposalStatus,
    quorum_size,
)
from ruflo_consensus.federation.qtable import QConfig, QTable
from ruflo_consensus.federation.registry import PeerRecord, PeerRegistry
from ruflo_consensus.federation.trust import TrustLedger, TrustLevel, TrustPolicy
from ruflo_consensus.federation.validation import (
    MAX_PAYLOAD_BYTES,
    Commit,
    check_fields,
    effective_time,
    opt_int,
    opt_str,
    req_str,
)
from ruflo_consensus.federation.wire import decode_snapshot, w_clock, w_count, w_int, w_map

__all__ = ["SNAPSHOT_VERSION", "FederationStateMachine"]

SNAPSHOT_VERSION = 1
"""Version tag of the combined snapshot format."""
_PART_NAMES = ("registry", "trust", "budget", "qtable", "audit", "proposals")

_Handler = Callable[[dict[str, Any], int], Commit]


class _FederationElectorate:
    """Voter eligibility from the registry, the breaker and the trust ledger."""

    def __init__(self, fed: FederationStateMachine) -> None:
        self.fed = fed

    def eligible_voters(self, t: int) -> list[str]:
        fed = self.fed
        return [
            p
            for p in fed.registry.peer_ids()
            if self.is_eligible(p, t) and fed.registry.peers[p].session_live(t)
        ]

    def voter_key(self, peer: str, t: int) -> bytes:
        return self.fed.require_standing(peer, t).public_key

    def is_eligible(self, peer: str, t: int) -> bool:
        fed = self.fed
        record = fed.registry.get(peer)
        level = fed.trust.level(peer)
        return (
            record is not None
            and record.status == "active"
            and fed.budget.state(peer, t) == BreakerState.ACTIVE
            and level is not None
            and level >= TrustLevel.ATTESTED
        )


class FederationStateMachine:
    """The whole federation state as one deterministic :class:`StateMachine`."""

    def __init__(
        self,
        *,
        trust_policy: TrustPolicy | None = None,
        approvers: dict[str, bytes] | None = None,
        breaker_policy: BreakerPolicy | None = None,
        qconfig: QConfig | None = None,
        compliance_mode: str = "none",
        retention_ms: int = RETENTION_MS,
    ) -> None:
        self._trust_policy = trust_policy
        self._approvers = dict(approvers or {})
        self._breaker_policy = breaker_policy
        self._qconfig = qconfig
        self._compliance_mode = compliance_mode
        self._retention_ms = retention_ms
        self._build()
        self._routes: dict[str, _Handler] = {
            "registry.join": self._join,
            "registry.update": self._update,
            "registry.handshake": self._handshake,
            "registry.heartbeat": self._heartbeat,
            "registry.session_end": self._session_end,
            "registry.evict": self._evict,
            "registry.reactivate": self._reactivate,
            "trust.record": self._trust_record,
            "trust.reinstate": self._trust_simple,
            "trust.grant_privileged": self._trust_simple,
            "trust.add_approver": self._add_approver,
            "budget.open": self._budget_simple,
            "budget.close": self._budget_simple,
            "budget.hop": self._hop,
            "budget.outcome": self._outcome,
            "budget.suspend": self._suspend,
            "budget.reactivate": self._reactivate,
            "budget.evict": self._evict,
            "budget.tick": self._tick,
            "qtable.update": self._qtable_update,
            "audit.append": self._audit_append,
            "audit.prune": self._audit_prune,
            "proposals.create": self._proposal_create,
            "proposals.vote": self._proposal_vote,
            "proposals.tick": self._tick,
            "federation.send": self._send,
            "federation.tick": self._tick,
        }

    def _build(self) -> None:
        self.registry = PeerRegistry()
        self.trust = TrustLedger(self._trust_policy, self._approvers)
        self.budget = BudgetLedger(self._breaker_policy)
        self.qtable = QTable(self._qconfig)
        self.audit = AuditLog(self._compliance_mode, self._retention_ms)
        self.proposals = ProposalBook()
        self.proposals.electorate = _FederationElectorate(self)
        self.clock = 0
        self.accepted = 0

    @property
    def ops(self) -> list[str]:
        """Every op the machine accepts, sorted."""
        return sorted(self._routes)

    def _parts(self) -> list[Any]:
        return [self.registry, self.trust, self.budget, self.qtable, self.audit, self.proposals]

    # ------------------------------------------------------------------- apply

    def apply(self, command: Any) -> Any:
        """Route one command; validate every part it touches, then commit them all."""
        if not isinstance(command, dict):
            raise BadCommand(f"command must be a map, got {type(command).__name__}")
        op = command.get("op")
        if not isinstance(op, str):
            raise BadCommand("command needs a string 'op'")
        handler = self._routes.get(op)
        if handler is None:
            raise UnknownOp(f"federation machine has no op {op!r}")
        t = effective_time(self.clock, command)
        opt_str(command, "node")
        commit = handler(command, t)
        result = commit()
        self.clock = t
        for part in self._parts():
            part.clock = t
        self._advance(t, command.get("node"))
        self.accepted += 1
        return result

    # ---------------------------------------------------------------- queries

    def require_standing(self, peer: str, t: int) -> PeerRecord:
        """A known peer that is neither evicted nor suspended at ``t`` (typed errors)."""
        record = self.registry.require(peer)
        if record.status == "evicted":
            raise PeerEvicted(f"peer {peer!r} is evicted")
        state = self.budget.state(peer, t)
        if state == BreakerState.SUSPENDED:
            raise PeerSuspended(f"peer {peer!r} is suspended")
        if state == BreakerState.EVICTED:
            raise PeerEvicted(f"peer {peer!r} is evicted")
        return record

    def can(self, peer: str, capability: str, t: int | None = None) -> bool:
        """True when ``peer`` is in good standing and its trust level unlocks ``capability``."""
        when = self.clock if t is None else t
        record = self.registry.get(peer)
        return (
            record is not None
            and record.status == "active"
            and self.budget.state(peer, when) == BreakerState.ACTIVE
            and self.trust.can(peer, capability)
        )

    def peer_view(self, peer: str) -> dict[str, Any]:
        """Registry, trust and breaker state of one peer in one map."""
        record = self.registry.require(peer)
        trust = self.trust.require(peer)
        out = record.describe(self.clock)
        out.update(
            {
                "trust_level": trust.level.name,
                "score": trust.score,
                "interactions": trust.interactions,
                "breaker": self.budget.breakers[peer].state.value,
            }
        )
        return out

    def invariant_violations(self) -> list[str]:
        """Check the replicated state's internal invariants; return what is broken."""
        out: list[str] = []
        broken = self.audit.verify()
        if broken is not None:
            out.append(f"audit chain broken at record index {broken}")
        for name in sorted(self.budget.delegations):
            d = self.budget.delegations[name]
            b = d.budget
            if d.hops > b.max_hops:
                out.append(f"delegation {name}: {d.hops} hops > max {b.max_hops}")
            if b.max_tokens is not None and d.tokens_spent > b.max_tokens:
                out.append(f"delegation {name}: tokens spent above cap")
            if b.max_usd_micros is not None and d.usd_spent_micros > b.max_usd_micros:
                out.append(f"delegation {name}: USD spent above cap")
        for pid in sorted(self.proposals.proposals):
            p = self.proposals.proposals[pid]
            approvals, rejections = p.tally()
            won = approvals >= p.quorum
            lost = rejections > p.n - p.quorum
            if p.quorum != quorum_size(p.n, p.fraction):
                out.append(f"proposal {pid}: quorum {p.quorum} != ceil(n x fraction)")
            if won and lost:
                out.append(f"proposal {pid}: both approved and rejected")
            if p.status == ProposalStatus.APPROVED and not won:
                out.append(f"proposal {pid}: approved without quorum")
            if p.status == ProposalStatus.REJECTED and not lost:
                out.append(f"proposal {pid}: rejected without enough rejections")
            if p.status in (ProposalStatus.PENDING, ProposalStatus.EXPIRED) and (won or lost):
                out.append(f"proposal {pid}: {p.status.value} although decided by its votes")
            if not set(p.votes) <= set(p.voters):
                out.append(f"proposal {pid}: vote from outside the electorate")
        peers = set(self.registry.peers)
        if peers != set(self.trust.peers) or peers != set(self.budget.breakers):
            out.append("registry, trust ledger and breakers disagree on the peer set")
        for peer in sorted(peers & set(self.budget.breakers)):
            evicted = self.registry.peers[peer].status == "evicted"
            if evicted != (self.budget.breakers[peer].state == BreakerState.EVICTED):
                out.append(f"peer {peer}: registry and breaker disagree on eviction")
        for peer in sorted(self.trust.peers):
            rec = self.trust.peers[peer]
            if rec.level == TrustLevel.UNTRUSTED and rec.score != 0.0:
                out.append(f"peer {peer}: UNTRUSTED with a non-zero score")
        if len(self.qtable) > self.qtable.config.max_states:
            out.append("Q-table holds more states than max_states")
        return out

    # ------------------------------------------------------------ helpers

    def _audit(
        self,
        t: int,
        node: Any,
        event_type: str,
        category: str,
        severity: str = "info",
        **fields: Any,
    ) -> None:
        fields.update({"event_type": event_type, "category": category, "severity": severity})
        self.audit.append_record(fields, t, node if isinstance(node, str) else None)

    def _audit_trust(self, t: int, node: Any, result: dict[str, Any]) -> None:
        if not result.get("changed"):
            return
        dropped = bool(result.get("dropped"))
        self._audit(
            t,
            node,
            "trust-dropped" if dropped else "trust-changed",
            "security",
            "critical" if dropped else "info",
            target=result["peer"],
            trust_level=result["level"],
            threat_found=result.get("drop_reason") == "threat-detections",
            metadata={"from": result["previous"], "reason": result.get("drop_reason")},
        )

    def _audit_breaker(self, t: int, node: Any, change: dict[str, Any] | None) -> None:
        if change is None:
            return
        self._audit(
            t,
            node,
            f"peer-{change['to'].lower()}",
            "security",
            "warn",
            target=change["peer"],
            metadata={"from": change["from"], "reason": change["reason"]},
        )

    def _advance(self, t: int, node: Any) -> None:
        for change in self.budget.advance(t):
            peer = change["peer"]
            if change["to"] == BreakerState.EVICTED.value:
                record = self.registry.peers.get(peer)
                if record is not None and record.status != "evicted":
                    self.registry.mark_evicted(peer, t, change["reason"])
            self._audit_breaker(t, node, change)
        for change in self.proposals.advance(t):
            self._audit(
                t,
                node,
                "proposal-expired",
                "consensus",
                metadata={"proposal_id": change["proposal_id"]},
            )

    @staticmethod
    def _sub(cmd: dict[str, Any], op: str, **fields: Any) -> dict[str, Any]:
        out = {"op": op, "now": cmd["now"]}
        out.update(fields)
        return out

    # ------------------------------------------------------------ registry

    def _join(self, cmd: dict[str, Any], t: int) -> Commit:
        reg = self.registry.plan("join", cmd, t)
        peer = cmd["manifest"]["node_id"]
        trust = self.trust.plan("register", self._sub(cmd, "register", peer=peer), t)
        breaker = self.budget.plan("add_peer", self._sub(cmd, "add_peer", peer=peer), t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = reg()
            trust_result = trust()
            breaker()
            result["trust_level"] = trust_result["level"]
            self._audit(
                t,
                cmd.get("node"),
                "peer-joined",
                "discovery",
                target=peer,
                trust_level=trust_result["level"],
            )
            return result

        return commit

    def _update(self, cmd: dict[str, Any], t: int) -> Commit:
        reg = self.registry.plan("update", cmd, t)
        peer = cmd["manifest"]["node_id"]

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = reg()
            self._audit(t, cmd.get("node"), "peer-updated", "discovery", target=peer)
            return result

        return commit

    def _handshake(self, cmd: dict[str, Any], t: int) -> Commit:
        peer = req_str(cmd, "peer")
        self.require_standing(peer, t)
        reg = self.registry.plan("handshake", cmd, t)
        trust = self.trust.plan("handshake", self._sub(cmd, "handshake", peer=peer), t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = reg()
            trust_result = trust()
            result["trust_level"] = trust_result["level"]
            self._audit(
                t,
                cmd.get("node"),
                "handshake-completed",
                "handshake",
                target=peer,
                session=result["session_id"],
                trust_level=trust_result["level"],
            )
            self._audit_trust(t, cmd.get("node"), trust_result)
            return result

        return commit

    def _heartbeat(self, cmd: dict[str, Any], t: int) -> Commit:
        self.require_standing(req_str(cmd, "peer"), t)
        return self.registry.plan("heartbeat", cmd, t)

    def _session_end(self, cmd: dict[str, Any], t: int) -> Commit:
        reg = self.registry.plan("session_end", cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = reg()
            self._audit(t, cmd.get("node"), "session-ended", "handshake", target=result["peer"])
            return result

        return commit

    def _evict(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "reason"))
        peer = req_str(cmd, "peer")
        record = self.registry.require(peer)
        reason = opt_str(cmd, "reason", max_len=512) or "operator"
        if record.status == "evicted" or self.budget.state(peer, t) == BreakerState.EVICTED:
            raise InvalidTransition(f"peer {peer!r} is already evicted")

        def commit() -> dict[str, Any]:
            self.registry.mark_evicted(peer, t, reason)
            change = self.budget.move(peer, BreakerState.EVICTED, t, reason)
            self._audit_breaker(t, cmd.get("node"), change)
            return change

        return commit

    def _reactivate(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "reason"))
        peer = req_str(cmd, "peer")
        record = self.registry.require(peer)
        reason = opt_str(cmd, "reason", max_len=512) or "operator"
        self.budget.check_reactivate(peer, t)

        def commit() -> dict[str, Any]:
            if record.status == "evicted":
                self.registry.mark_active(peer, t)
            change = self.budget.move(peer, BreakerState.ACTIVE, t, reason)
            self._audit_breaker(t, cmd.get("node"), change)
            return change

        return commit

    # --------------------------------------------------------------- trust

    def _trust_record(self, cmd: dict[str, Any], t: int) -> Commit:
        self.registry.require(req_str(cmd, "peer"))
        plan = self.trust.plan("record", cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = plan()
            self._audit_trust(t, cmd.get("node"), result)
            return result

        return commit

    def _trust_simple(self, cmd: dict[str, Any], t: int) -> Commit:
        op = cmd["op"].split(".", 1)[1]
        peer = req_str(cmd, "peer")
        self.registry.require(peer)
        if op == "grant_privileged":
            self.require_standing(peer, t)
        plan = self.trust.plan(op, cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = plan()
            self._audit(
                t,
                cmd.get("node"),
                "privileged-granted" if op == "grant_privileged" else "trust-reinstated",
                "security",
                "warn",
                target=result["peer"],
                trust_level=result["level"],
                metadata={"from": result["previous"], "approver": result.get("approver")},
            )
            return result

        return commit

    def _add_approver(self, cmd: dict[str, Any], t: int) -> Commit:
        plan = self.trust.plan("add_approver", cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = plan()
            self._audit(
                t, cmd.get("node"), "approver-added", "security", "warn", metadata=dict(result)
            )
            return result

        return commit

    # -------------------------------------------------------------- budget

    def _budget_simple(self, cmd: dict[str, Any], t: int) -> Commit:
        return self.budget.plan(cmd["op"].split(".", 1)[1], cmd, t)

    def _hop(self, cmd: dict[str, Any], t: int) -> Commit:
        req_str(cmd, "delegation")
        return self._send(cmd, t)

    def _send(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(
            cmd, ("peer", "message_type", "size_bytes", "session", "delegation", "tokens", "usd")
        )
        peer = req_str(cmd, "peer")
        self.require_standing(peer, t)
        message_type = opt_str(cmd, "message_type", max_len=64) or "task-assignment"
        if message_type not in MESSAGE_TYPES:
            raise BadArgument(f"unknown message type {message_type!r}")
        size = opt_int(cmd, "size_bytes", 0, hi=2**53)
        if size > MAX_PAYLOAD_BYTES:
            raise TooLarge(f"messages are at most {MAX_PAYLOAD_BYTES} bytes")
        session = opt_str(cmd, "session")
        if not self.trust.can(peer, "send"):
            raise NotAuthorized(f"peer {peer!r} is below ATTESTED and may not exchange messages")
        spend: Commit | None = None
        if cmd.get("delegation") is not None:
            spend = self.budget.plan_spend(cmd, peer, self.budget.breakers[peer], t)
        elif cmd.get("tokens") is not None or cmd.get("usd") is not None:
            raise BadArgument("'tokens' and 'usd' need a 'delegation'")
        record = self.trust.plan("record", self._sub(cmd, "record", peer=peer, sent=1), t)

        def commit() -> dict[str, Any]:
            node = cmd.get("node")
            result: dict[str, Any] = {"peer": peer, "message_type": message_type}
            if spend is not None:
                spent = spend()
                result.update({"delegation": spent["delegation"], "hops": spent["hops"]})
                self._audit_breaker(t, node, spent["transition"])
            trust_result = record()
            result["trust_level"] = trust_result["level"]
            self._audit(
                t,
                node,
                "message-sent",
                "message",
                target=peer,
                session=session,
                trust_level=trust_result["level"],
                size_bytes=size,
                metadata={"message_type": message_type, "delegation": cmd.get("delegation")},
            )
            self._audit_trust(t, node, trust_result)
            return result

        return commit

    def _outcome(self, cmd: dict[str, Any], t: int) -> Commit:
        self.registry.require(req_str(cmd, "peer"))
        plan = self.budget.plan("outcome", cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = plan()
            self._audit_breaker(t, cmd.get("node"), result["transition"])
            return result

        return commit

    def _suspend(self, cmd: dict[str, Any], t: int) -> Commit:
        self.registry.require(req_str(cmd, "peer"))
        plan = self.budget.plan("suspend", cmd, t)

        def commit() -> dict[str, Any]:
            change: dict[str, Any] = plan()
            self._audit_breaker(t, cmd.get("node"), change)
            return change

        return commit

    def _tick(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ())
        return lambda: {"now": t}

    # -------------------------------------------------- qtable/audit/proposals

    def _qtable_update(self, cmd: dict[str, Any], t: int) -> Commit:
        return self.qtable.plan("update", cmd, t)

    def _audit_append(self, cmd: dict[str, Any], t: int) -> Commit:
        return self.audit.plan("append", cmd, t)

    def _audit_prune(self, cmd: dict[str, Any], t: int) -> Commit:
        return self.audit.plan("prune", cmd, t)

    def _proposal_create(self, cmd: dict[str, Any], t: int) -> Commit:
        plan = self.proposals.plan("create", cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = plan()
            self._audit(
                t,
                cmd.get("node"),
                "proposal-created",
                "consensus",
                source=cmd.get("proposer"),
                metadata={
                    "proposal_id": result["proposal_id"],
                    "message_type": cmd["message_type"],
                    "quorum": result["quorum"],
                    "n": result["n"],
                },
            )
            return result

        return commit

    def _proposal_vote(self, cmd: dict[str, Any], t: int) -> Commit:
        plan = self.proposals.plan("vote", cmd, t)

        def commit() -> dict[str, Any]:
            result: dict[str, Any] = plan()
            node = cmd.get("node")
            self._audit(
                t,
                node,
                "vote-cast",
                "consensus",
                source=cmd["voter"],
                metadata={"proposal_id": result["proposal_id"], "approve": cmd["approve"]},
            )
            if result["status"] != ProposalStatus.PENDING.value:
                self._audit(
                    t,
                    node,
                    f"proposal-{result['status']}",
                    "consensus",
                    metadata={
                        "proposal_id": result["proposal_id"],
                        "approvals": result["approvals"],
                        "rejections": result["rejections"],
                        "quorum": result["quorum"],
                        "n": result["n"],
                    },
                )
            return result

        return commit

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form of the whole federation state."""
        return {
            "version": SNAPSHOT_VERSION,
            "clock": self.clock,
            "accepted": self.accepted,
            "registry": self.registry.to_wire(),
            "trust": self.trust.to_wire(),
            "budget": self.budget.to_wire(),
            "qtable": self.qtable.to_wire(),
            "audit": self.audit.to_wire(),
            "proposals": self.proposals.to_wire(),
        }

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state: equal states give equal bytes."""
        return canonical_bytes(self.to_wire())

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot; on a bad snapshot nothing changes."""
        self.load_wire(decode_snapshot(data, "federation"))

    def load_wire(self, value: Any) -> None:
        """Replace the whole state with ``value`` from :meth:`to_wire`: validate, then swap.

        Every part is decoded into a new object (each checks all of its fields and that it
        can be encoded again), then the parts are checked against each other; only when all
        of that passed are the new parts swapped in. Any failure raises ``BadSnapshot`` and
        leaves this machine as it was.
        """
        wire = w_map(value, "federation", ("version", "clock", "accepted", *_PART_NAMES))
        w_int(wire["version"], "version", lo=SNAPSHOT_VERSION, hi=SNAPSHOT_VERSION)
        clock = w_clock(wire["clock"])
        accepted = w_count(wire["accepted"], "accepted")
        registry = self.registry.decoded(wire["registry"])
        trust = self.trust.decoded(wire["trust"])
        budget = self.budget.decoded(wire["budget"])
        qtable = self.qtable.decoded(wire["qtable"])
        audit = self.audit.decoded(wire["audit"])
        proposals = self.proposals.decoded(wire["proposals"])
        peers = set(registry.peers)
        if peers != set(trust.peers) or peers != set(budget.breakers):
            raise BadSnapshot("registry, trust ledger and breakers hold different peers")
        # Nothing below can fail: swap the new parts in.
        self.registry, self.trust, self.budget = registry, trust, budget
        self.qtable, self.audit, self.proposals = qtable, audit, proposals
        self.clock, self.accepted = clock, accepted
