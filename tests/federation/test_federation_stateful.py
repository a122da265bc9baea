"""Hypothesis stateful tests: random command sequences against independent reference models.

Each machine is driven by a ``RuleBasedStateMachine`` whose model is written from the spec,
not from the implementation. After every command the model predicts acceptance or the exact
rejection code; a rejected command must leave the snapshot byte-for-byte unchanged.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ruflo_consensus.federation.audit import AuditLog, verify_chain
from ruflo_consensus.federation.budget import BudgetLedger
from ruflo_consensus.federation.machine import FederationStateMachine
from ruflo_consensus.federation.proposals import (
    ProposalBook,
    make_proposal_command,
    make_vote_command,
)
from ruflo_consensus.federation.registry import make_handshake_command, make_join_command
from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.federation.trust import TrustLedger, make_privileged_approval_command
from ruflo_consensus.federation.workload import check_cross_replica
from ruflo_consensus.statemachine import CommandError

T0 = 7_000_000_000
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
PEERS = ("p0", "p1", "p2", "p3")
KEYS = {name: nacl.signing.SigningKey(name.encode().ljust(32, b"\0")) for name in (*PEERS, "alice")}

SETTINGS = settings(
    max_examples=35,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def expect(machine: Any, command: Any, code: str | None) -> Any:
    """Apply ``command``; it must succeed when ``code`` is None, else fail with ``code``."""
    before = machine.snapshot()
    event(f"{command.get('op')}: {code or 'ok'}")
    try:
        result = machine.apply(command)
    except CommandError as exc:
        assert exc.code == code, f"{command.get('op')}: expected {code}, got {exc}"
        assert machine.snapshot() == before, "a rejected command changed the state"
        return None
    assert code is None, f"{command.get('op')}: expected {code}, but it was accepted"
    return result


# =========================================================== trust ledger


@dataclass
class RefTrust:
    level: int = 1
    sent: int = 0
    received: int = 0
    failures: int = 0
    threats: list[int] = field(default_factory=list)
    uptime: float = 1.0
    score: float = 0.0
    candidate: bool = False
    last_approval: int | None = None


UP = {1: (0.70, 50), 2: (0.85, 500), 3: (0.95, 5000)}
DOWN = {2: 0.50, 3: 0.65, 4: 0.80}


def ref_score(r: RefTrust, t: int) -> float:
    total = r.sent + r.received
    recent = len([x for x in r.threats if t - x < DAY])
    success = 0.0 if total == 0 else (total - r.failures) / total
    threat = 0.0 if total == 0 else min(1.0, 10.0 * recent / total)
    integrity = 1.0 if total == 0 else 1.0 - r.failures / total
    raw = 0.4 * success + 0.2 * r.uptime + 0.2 * (1.0 - threat) + 0.2 * integrity
    return round(max(0.0, min(1.0, raw)), 12)


def ref_evaluate(r: RefTrust, t: int) -> None:
    r.score = ref_score(r, t)
    n = r.sent + r.received
    r.candidate = False
    if r.level in UP and r.score >= UP[r.level][0] and n >= UP[r.level][1]:
        if r.level == 3:
            r.candidate = True
        else:
            r.level += 1
            return
    if r.level in DOWN and r.score < DOWN[r.level]:
        r.level -= 1


class TrustStateful(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tl = TrustLedger(approvers={"alice": public_key_bytes(KEYS["alice"])})
        self.model: dict[str, RefTrust] = {}
        self.now = T0

    @initialize()
    def register_three(self) -> None:
        for peer in PEERS[:3]:
            self.register(peer, 0)

    @rule(peer=st.sampled_from(PEERS), dt=st.integers(0, 2 * HOUR))
    def register(self, peer: str, dt: int) -> None:
        self.now += dt
        cmd = {"op": "register", "peer": peer, "now": self.now}
        if peer in self.model:
            expect(self.tl, cmd, "PEER_EXISTS")
            return
        expect(self.tl, cmd, None)
        self.model[peer] = RefTrust()
        self.model[peer].score = ref_score(self.model[peer], self.now)

    @rule(peer=st.sampled_from(PEERS))
    def handshake(self, peer: str) -> None:
        cmd = {"op": "handshake", "peer": peer, "now": self.now}
        r = self.model.get(peer)
        expect(self.tl, cmd, None if r else "UNKNOWN_PEER")
        if r and r.level == 1:
            r.level, r.candidate = 2, False

    @rule(
        peer=st.sampled_from(PEERS),
        sent=st.one_of(st.integers(0, 60), st.integers(0, 5000)),
        received=st.integers(0, 300),
        failure=st.integers(0, 20).map(lambda x: 1 if x == 0 else 0),
        threats=st.sampled_from([0, 0, 0, 0, 1, 1, 2]),
        hijack=st.integers(0, 40).map(lambda x: x == 0),
        uptime=st.one_of(st.none(), st.floats(0.8, 1), st.floats(0, 1)),
        dt=st.one_of(st.integers(0, 10 * MIN), st.integers(0, 2 * DAY)),
    )
    def record(
        self,
        peer: str,
        sent: int,
        received: int,
        failure: int,
        threats: int,
        hijack: bool,
        uptime: float | None,
        dt: int,
    ) -> None:
        self.now += dt
        cmd: dict[str, Any] = {
            "op": "trust.record",
            "peer": peer,
            "sent": sent,
            "received": received,
            "integrity_failures": failure,
            "threats": threats,
            "hijack": hijack,
            "uptime": uptime,
            "now": self.now,
        }
        r = self.model.get(peer)
        if r is None:
            expect(self.tl, cmd, "UNKNOWN_PEER")
            return
        result = expect(self.tl, cmd, None)
        t = self.now
        r.sent += sent
        r.received += received
        r.failures += failure
        if uptime is not None:
            r.uptime = uptime
        r.threats += [t] * threats
        in_hour = len([x for x in r.threats if t - x < HOUR])
        if failure or hijack or (threats and in_hour >= 2):
            r.level, r.score, r.candidate = 0, 0.0, False
            assert result["dropped"]
        elif r.level != 0:
            ref_evaluate(r, t)

    @rule(peer=st.sampled_from(PEERS))
    def clean_batch(self, peer: str) -> None:
        """A large clean batch: the way up the ladder (one rung per evaluation)."""
        self.record(peer, 5000, 0, 0, 0, False, 1.0, 1_000)

    @rule(peer=st.sampled_from(PEERS))
    def reinstate(self, peer: str) -> None:
        cmd = {"op": "reinstate", "peer": peer, "now": self.now}
        r = self.model.get(peer)
        if r is None:
            expect(self.tl, cmd, "UNKNOWN_PEER")
        elif r.level != 0:
            expect(self.tl, cmd, "INVALID_TRANSITION")
        else:
            expect(self.tl, cmd, None)
            r.level, r.threats = 1, []
            r.score = ref_score(r, self.now)

    @rule(peer=st.sampled_from(PEERS), dt=st.integers(0, MIN))
    def grant(self, peer: str, dt: int) -> None:
        self.now += dt
        cmd = make_privileged_approval_command(KEYS["alice"], "alice", peer, self.now)
        r = self.model.get(peer)
        if r is None:
            expect(self.tl, cmd, "UNKNOWN_PEER")
        elif r.last_approval is not None and self.now <= r.last_approval:
            expect(self.tl, cmd, "REPLAYED")
        elif r.level != 3 or not r.candidate:
            expect(self.tl, cmd, "NOT_ELIGIBLE")
        else:
            expect(self.tl, cmd, None)
            r.level, r.candidate, r.last_approval = 4, False, self.now

    @invariant()
    def levels_follow_the_ladder(self) -> None:
        for peer, r in self.model.items():
            event(f"level {r.level}")
            rec = self.tl.peers[peer]
            assert int(rec.level) == r.level, (peer, rec, r)
            assert math.isclose(rec.score, r.score, abs_tol=1e-9)
            assert rec.privileged_candidate == r.candidate
            if r.level == 0:
                assert rec.score == 0.0


TestTrustStateful = TrustStateful.TestCase
TestTrustStateful.settings = settings(SETTINGS, max_examples=60)


# =========================================================== budget ledger


@dataclass
class RefBreaker:
    state: str = "ACTIVE"
    suspended_at: int | None = None
    spends: list[tuple[int, int]] = field(default_factory=list)
    outcomes: list[tuple[int, bool]] = field(default_factory=list)

    def effective(self, t: int) -> str:
        suspended = self.state == "SUSPENDED" and self.suspended_at is not None
        if suspended and t - (self.suspended_at or 0) >= DAY:
            return "EVICTED"
        return self.state

    def move(self, state: str, t: int) -> None:
        self.state = state
        self.suspended_at = t if state == "SUSPENDED" else None
        if state == "ACTIVE":
            self.spends, self.outcomes = [], []

    def evaluate(self, t: int) -> None:
        if self.state != "ACTIVE":
            return
        if sum(m for ts, m in self.spends if t - ts < DAY) > 5_000_000:
            self.move("SUSPENDED", t)
            return
        recent = [ok for ts, ok in self.outcomes if t - ts < HOUR]
        if len(recent) >= 10 and 2 * recent.count(False) > len(recent):
            self.move("SUSPENDED", t)


@dataclass
class RefDelegation:
    max_hops: int
    max_tokens: int | None
    max_usd: int | None
    hops: int = 0
    tokens: int = 0
    usd: int = 0


_HOPS = st.one_of(st.none(), st.integers(-2, 70), st.sampled_from([2.5, math.nan, math.inf, 4.0]))
_TOKENS = st.one_of(st.none(), st.integers(-5, 3000), st.sampled_from([math.inf, math.nan, 1.5]))
_USD = st.one_of(
    st.none(),
    st.integers(0, 600).map(lambda c: c / 100),
    st.sampled_from([-1.0, math.nan, math.inf, 2_000_000.0]),
)


def ref_budget(hops: Any, tokens: Any, usd: Any) -> tuple[int, int | None, int | None] | None:
    """The spec's validation, written out for the generated domain; None when invalid."""
    if hops is None:
        h = 8
    else:
        if isinstance(hops, float) and (not math.isfinite(hops) or hops != int(hops)):
            return None
        if not 0 <= hops <= 64:
            return None
        h = int(hops)
    if tokens is None or tokens == math.inf:
        tok = None
    else:
        if isinstance(tokens, float) and (math.isnan(tokens) or tokens != int(tokens)):
            return None
        if not 0 <= tokens <= 1_000_000_000:
            return None
        tok = int(tokens)
    if usd is None or usd == math.inf:
        dollars = None
    elif math.isnan(usd) or not 0 <= usd <= 1_000_000:
        return None
    else:
        dollars = round(usd * 1_000_000)
    return h, tok, dollars


class BudgetStateful(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bl = BudgetLedger()
        self.breakers: dict[str, RefBreaker] = {}
        self.delegations: dict[str, RefDelegation] = {}
        self.now = T0

    def _accepted(self) -> None:
        for b in self.breakers.values():
            if b.state == "SUSPENDED" and b.effective(self.now) == "EVICTED":
                b.move("EVICTED", self.now)

    def _tick(self, dt: int) -> None:
        self.now += dt

    @initialize()
    def setup(self) -> None:
        for peer in PEERS[:3]:
            self.add_peer(peer)
        self.open("d0", 8, 5000, 3.0)

    @rule(peer=st.sampled_from(PEERS))
    def add_peer(self, peer: str) -> None:
        cmd = {"op": "add_peer", "peer": peer, "now": self.now}
        if peer in self.breakers:
            expect(self.bl, cmd, "PEER_EXISTS")
        else:
            expect(self.bl, cmd, None)
            self.breakers[peer] = RefBreaker()
            self._accepted()

    @rule(name=st.sampled_from(["d0", "d1", "d2"]), hops=_HOPS, tokens=_TOKENS, usd=_USD)
    def open(self, name: str, hops: Any, tokens: Any, usd: Any) -> None:
        budget = {"max_hops": hops, "max_tokens": tokens, "max_usd": usd}
        cmd = {"op": "open", "delegation": name, "budget": budget, "now": self.now}
        parsed = ref_budget(hops, tokens, usd)
        if parsed is None:
            expect(self.bl, cmd, "INVALID_BUDGET")
        elif name in self.delegations:
            expect(self.bl, cmd, "DELEGATION_EXISTS")
        else:
            expect(self.bl, cmd, None)
            self.delegations[name] = RefDelegation(*parsed)
            self._accepted()

    @rule(name=st.sampled_from(["d0", "d1", "d2"]))
    def close(self, name: str) -> None:
        cmd = {"op": "close", "delegation": name, "now": self.now}
        expect(self.bl, cmd, None if name in self.delegations else "UNKNOWN_DELEGATION")
        if name in self.delegations:
            del self.delegations[name]
            self._accepted()

    @rule(
        name=st.sampled_from(["d0", "d1", "d2"]),
        peer=st.sampled_from(PEERS),
        tokens=st.integers(-10, 1500),
        cents=st.integers(-100, 300),
        dt=st.integers(0, 3 * HOUR),
    )
    def hop(self, name: str, peer: str, tokens: int, cents: int, dt: int) -> None:
        self._tick(dt)
        usd = cents / 100
        cmd = {"op": "hop", "delegation": name, "peer": peer, "tokens": tokens, "usd": usd,
               "now": self.now}  # fmt: skip
        b = self.breakers.get(peer)
        d = self.delegations.get(name)
        micros = round(max(0.0, usd) * 1_000_000)
        tok = max(0, tokens)
        if b is None:
            code: str | None = "UNKNOWN_PEER"
        elif b.effective(self.now) == "SUSPENDED":
            code = "PEER_SUSPENDED"
        elif b.effective(self.now) == "EVICTED":
            code = "PEER_EVICTED"
        elif d is None:
            code = "UNKNOWN_DELEGATION"
        elif d.hops + 1 > d.max_hops:
            code = "HOP_LIMIT_EXCEEDED"
        elif (d.max_tokens is not None and d.tokens + tok > d.max_tokens) or (
            d.max_usd is not None and d.usd + micros > d.max_usd
        ):
            code = "BUDGET_EXCEEDED"
        else:
            code = None
        expect(self.bl, cmd, code)
        if code is None:
            assert b is not None and d is not None
            d.hops, d.tokens, d.usd = d.hops + 1, d.tokens + tok, d.usd + micros
            if micros:
                b.spends.append((self.now, micros))
            b.evaluate(self.now)
            self._accepted()

    @rule(peer=st.sampled_from(PEERS), ok=st.booleans(), dt=st.integers(0, 10 * MIN))
    def outcome(self, peer: str, ok: bool, dt: int) -> None:
        self._tick(dt)
        cmd = {"op": "outcome", "peer": peer, "ok": ok, "now": self.now}
        b = self.breakers.get(peer)
        expect(self.bl, cmd, None if b else "UNKNOWN_PEER")
        if b:
            b.outcomes.append((self.now, ok))
            b.evaluate(self.now)
            self._accepted()

    @rule(
        peer=st.sampled_from(PEERS),
        op=st.sampled_from(["suspend", "reactivate", "evict"]),
        dt=st.one_of(st.integers(0, HOUR), st.integers(0, 2 * DAY)),
    )
    def operator(self, peer: str, op: str, dt: int) -> None:
        self._tick(dt)
        cmd = {"op": op, "peer": peer, "now": self.now}
        b = self.breakers.get(peer)
        if b is None:
            expect(self.bl, cmd, "UNKNOWN_PEER")
            return
        state = b.effective(self.now)
        target = {"suspend": "SUSPENDED", "reactivate": "ACTIVE", "evict": "EVICTED"}[op]
        allowed = (
            (op == "suspend" and state == "ACTIVE")
            or (op == "evict" and state != "EVICTED")
            or (op == "reactivate" and state == "EVICTED")
            or (
                op == "reactivate"
                and state == "SUSPENDED"
                and b.suspended_at is not None
                and self.now - b.suspended_at >= 30 * MIN
            )
        )
        expect(self.bl, cmd, None if allowed else "INVALID_TRANSITION")
        if allowed:
            b.move(target, self.now)
            self._accepted()

    @rule(dt=st.integers(0, DAY))
    def tick(self, dt: int) -> None:
        self._tick(dt)
        expect(self.bl, {"op": "tick", "now": self.now}, None)
        self._accepted()

    @invariant()
    def ledger_matches_model(self) -> None:
        for peer, b in self.breakers.items():
            event(f"breaker {b.state}")
            assert self.bl.breakers[peer].state.value == b.state, peer
        assert sorted(self.bl.delegations) == sorted(self.delegations)
        for name, d in self.delegations.items():
            real = self.bl.delegations[name]
            assert (real.hops, real.tokens_spent, real.usd_spent_micros) == (
                d.hops,
                d.tokens,
                d.usd,
            )
            assert real.hops <= real.budget.max_hops
            if real.budget.max_tokens is not None:
                assert real.tokens_spent <= real.budget.max_tokens
            if real.budget.max_usd_micros is not None:
                assert real.usd_spent_micros <= real.budget.max_usd_micros


TestBudgetStateful = BudgetStateful.TestCase
TestBudgetStateful.settings = SETTINGS


# ================================================================ audit log


class AuditStateful(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = AuditLog()
        self.now = T0
        self.appended = 0
        self.pruned = 0

    @rule(
        category=st.sampled_from(["discovery", "message", "pii", "security", "bogus"]),
        severity=st.sampled_from(["info", "warn", "error", "critical", None]),
        pii=st.lists(st.sampled_from(["email", "ssn", "name"]), unique=True, max_size=2),
        metadata=st.dictionaries(
            st.sampled_from(["a", "b", "original"]), st.integers(-(2**40), 2**40), max_size=3
        ),
        hipaa=st.booleans(),
        dt=st.one_of(st.integers(0, HOUR), st.integers(0, 40 * DAY)),
    )
    def append(
        self,
        category: str,
        severity: str | None,
        pii: list[str],
        metadata: dict[str, int],
        hipaa: bool,
        dt: int,
    ) -> None:
        self.now += dt
        cmd = {
            "op": "append",
            "event_type": "e",
            "category": category,
            "severity": severity,
            "pii_types": pii,
            "metadata": metadata,
            "content": "raw",
            "compliance_mode": "hipaa" if hipaa else "none",
            "now": self.now,
        }
        ok = category != "bogus"
        expect(self.log, cmd, None if ok else "BAD_ARGUMENT")
        if ok:
            self.appended += 1
            rec = self.log.records[-1]
            assert (rec["content"] is None) == hipaa
            if hipaa and pii:
                assert "original" not in rec["metadata"]

    @rule(dt=st.integers(0, 60 * DAY))
    def prune(self, dt: int) -> None:
        self.now += dt
        expected = [r for r in self.log.records if self.now - r["timestamp"] > 90 * DAY]
        result = expect(self.log, {"op": "prune", "now": self.now}, None)
        assert result["pruned"] == len(expected)
        self.pruned += len(expected)

    @precondition(lambda self: len(self.log.records) > 0)
    @rule(data=st.data())
    def tampering_is_found(self, data: st.DataObject) -> None:
        records = copy.deepcopy(self.log.records)
        i = data.draw(st.integers(0, len(records) - 1))
        name = data.draw(st.sampled_from(["severity", "timestamp", "source", "metadata", "seq"]))
        records[i][name] = {"severity": "tampered", "timestamp": -1, "source": "x",
                            "metadata": {"z": 1}, "seq": 10**9}[name]  # fmt: skip
        assert verify_chain(records, self.log.anchor_hash) == i

    @invariant()
    def chain_verifies(self) -> None:
        assert self.log.verify() is None
        assert len(self.log.records) == self.appended - self.pruned
        seqs = [r["seq"] for r in self.log.records]
        assert seqs == list(range(self.pruned + 1, self.appended + 1))


TestAuditStateful = AuditStateful.TestCase
TestAuditStateful.settings = SETTINGS


# ================================================================ proposals


@dataclass
class RefProposal:
    voters: list[str]
    quorum: int
    expires: int
    votes: dict[str, tuple[bool, int]] = field(default_factory=dict)
    status: str = "pending"


FRACTIONS = {None: (2, 3), 0.5: (1, 2), 1: (1, 1), (3, 4): (3, 4)}


class ProposalStateful(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = ProposalBook()
        self.roster: dict[str, tuple[int, str]] = {}
        self.props: dict[str, RefProposal] = {}
        self.now = T0

    def _accepted(self) -> None:
        for p in self.props.values():
            if p.status == "pending" and self.now >= p.expires:
                p.status = "expired"

    @rule(
        voter=st.sampled_from(PEERS),
        level=st.integers(0, 4),
        state=st.sampled_from(["ACTIVE", "ACTIVE", "SUSPENDED", "EVICTED"]),
    )
    def set_voter(self, voter: str, level: int, state: str) -> None:
        cmd = {"op": "set_voter", "peer": voter, "public_key": public_key_bytes(KEYS[voter]),
               "level": level, "state": state, "now": self.now}  # fmt: skip
        expect(self.book, cmd, None)
        self.roster[voter] = (level, state)
        self._accepted()

    @initialize()
    def three_voters(self) -> None:
        for voter in PEERS[:3]:
            self.set_voter(voter, 2, "ACTIVE")

    def _eligible(self, voter: str) -> bool:
        level, state = self.roster.get(voter, (0, "EVICTED"))
        return level >= 2 and state == "ACTIVE"

    @rule(
        pid=st.sampled_from(["a", "b", "c", "d"]),
        fraction=st.sampled_from(list(FRACTIONS)),
        ttl=st.sampled_from([None, 1_000, 60_000]),
        dt=st.integers(0, 5_000),
    )
    def create(self, pid: str, fraction: Any, ttl: int | None, dt: int) -> None:
        self.now += dt
        qf = list(fraction) if isinstance(fraction, tuple) else fraction
        cmd = make_proposal_command(pid, "trust-change", {}, self.now, quorum_fraction=qf,
                                    ttl_ms=ttl)  # fmt: skip
        voters = sorted(v for v in self.roster if self._eligible(v))
        if pid in self.props:
            expect(self.book, cmd, "PROPOSAL_EXISTS")
        elif not voters:
            expect(self.book, cmd, "NO_ELIGIBLE_VOTERS")
        else:
            result = expect(self.book, cmd, None)
            num, den = FRACTIONS[fraction]
            quorum = math.ceil(len(voters) * num / den - 1e-9)
            assert result["quorum"] == quorum and result["voters"] == voters
            self.props[pid] = RefProposal(voters, quorum, self.now + (ttl or 30_000))
            self._accepted()

    @rule(
        pid=st.sampled_from(["a", "b", "c", "d"]),
        voter=st.sampled_from(PEERS),
        approve=st.booleans(),
        forge=st.integers(0, 9).map(lambda x: x == 0),
        back=st.integers(0, 9).map(lambda x: x == 0),
        dt=st.integers(0, 4_000),
    )
    def vote(self, pid: str, voter: str, approve: bool, forge: bool, back: bool, dt: int) -> None:
        self.now += dt
        signed_at = self.now - 1 if back else self.now
        signer = KEYS["alice"] if forge else KEYS[voter]
        cmd = make_vote_command(signer, pid, approve, signed_at, voter=voter)
        p = self.props.get(pid)
        level, state = self.roster.get(voter, (None, None))
        if p is None:
            code: str | None = "UNKNOWN_PROPOSAL"
        elif level is None:
            code = "UNKNOWN_PEER"
        elif state != "ACTIVE":
            code = "PEER_SUSPENDED" if state == "SUSPENDED" else "PEER_EVICTED"
        elif forge:
            code = "BAD_SIGNATURE"
        elif voter not in p.voters or not self._eligible(voter):
            code = "NOT_ELIGIBLE"
        elif p.status == "expired" or (p.status == "pending" and self.now >= p.expires):
            code = "PROPOSAL_EXPIRED"
        elif p.status != "pending":
            code = "PROPOSAL_CLOSED"
        elif voter in p.votes and signed_at <= p.votes[voter][1]:
            code = "REPLAYED"
        else:
            code = None
        expect(self.book, cmd, code)
        if code is None:
            assert p is not None
            p.votes[voter] = (approve, signed_at)
            yes = sum(1 for a, _ in p.votes.values() if a)
            no = len(p.votes) - yes
            if yes >= p.quorum:
                p.status = "approved"
            elif no > len(p.voters) - p.quorum:
                p.status = "rejected"
            self._accepted()

    @rule(dt=st.integers(0, 40_000))
    def tick(self, dt: int) -> None:
        self.now += dt
        expect(self.book, {"op": "tick", "now": self.now}, None)
        self._accepted()

    @invariant()
    def outcomes_match_the_rules(self) -> None:
        for pid, ref in self.props.items():
            event(f"proposal {ref.status}")
            real = self.book.proposals[pid]
            assert real.status.value == ref.status, (pid, real, ref)
            yes, no = real.tally()
            won, lost = yes >= real.quorum, no > real.n - real.quorum
            assert not (won and lost), "approved and rejected at once"
            assert (real.status.value == "approved") == won
            assert (real.status.value == "rejected") == lost


TestProposalStateful = ProposalStateful.TestCase
TestProposalStateful.settings = settings(SETTINGS, max_examples=60)


# ======================================================= whole federation


class FederationStateful(RuleBasedStateMachine):
    """Two replicas in lock-step; every rule's command goes to both."""

    def __init__(self) -> None:
        super().__init__()
        approvers = {"alice": public_key_bytes(KEYS["alice"])}
        self.replicas = [FederationStateMachine(approvers=approvers) for _ in range(2)]
        self.now = T0
        self.nonce = 0

    def _apply(self, cmd: dict[str, Any]) -> None:
        outcomes = []
        for fed in self.replicas:
            before = fed.snapshot()
            try:
                fed.apply(copy.deepcopy(cmd))
                outcomes.append("ok")
            except CommandError as exc:
                outcomes.append(exc.code)
                assert fed.snapshot() == before, f"rejected {cmd['op']} changed the state"
        assert outcomes[0] == outcomes[1]
        event(f"{cmd['op']}: {outcomes[0]}")

    def _step(self, dt: int) -> None:
        self.now += dt

    @initialize()
    def three_attested_peers(self) -> None:
        for peer in PEERS[:3]:
            self.join(peer, 0)
            self.handshake(peer, 0)
        self.open("d0", 8, 3.0)

    @rule(peer=st.sampled_from(PEERS), dt=st.integers(0, 5_000))
    def join(self, peer: str, dt: int) -> None:
        self._step(dt)
        self._apply(make_join_command(KEYS[peer], peer, f"wss://{peer}", ["coder"], self.now))

    @rule(peer=st.sampled_from(PEERS), dt=st.integers(0, 5_000))
    def handshake(self, peer: str, dt: int) -> None:
        self._step(dt)
        self.nonce += 1
        nonce = self.nonce.to_bytes(16, "big")
        self._apply(
            make_handshake_command(KEYS[peer], peer, f"s{self.nonce}", nonce, self.now, self.now)
        )

    @rule(dt=st.integers(0, 30_000))
    def heartbeats(self, dt: int) -> None:
        self._step(dt)
        for peer in PEERS:
            self._apply({"op": "registry.heartbeat", "peer": peer, "now": self.now})

    @rule(
        peer=st.sampled_from(PEERS),
        delegation=st.sampled_from([None, "d0", "d1"]),
        tokens=st.integers(-5, 500),
        cents=st.integers(0, 200),
        dt=st.integers(0, 10_000),
    )
    def send(self, peer: str, delegation: str | None, tokens: int, cents: int, dt: int) -> None:
        self._step(dt)
        cmd: dict[str, Any] = {"op": "federation.send", "peer": peer, "now": self.now}
        if delegation:
            cmd.update({"delegation": delegation, "tokens": tokens, "usd": cents / 100})
        self._apply(cmd)

    @rule(
        name=st.sampled_from(["d0", "d1"]),
        hops=st.integers(-1, 10),
        usd=st.sampled_from([None, 0.5, 3.0, -1.0]),
    )
    def open(self, name: str, hops: int, usd: float | None) -> None:
        budget = {"max_hops": hops, "max_usd": usd, "max_tokens": 1000}
        self._apply({"op": "budget.open", "delegation": name, "budget": budget, "now": self.now})

    @rule(name=st.sampled_from(["d0", "d1"]))
    def close(self, name: str) -> None:
        self._apply({"op": "budget.close", "delegation": name, "now": self.now})

    @rule(
        peer=st.sampled_from(PEERS),
        sent=st.integers(0, 3000),
        bad=st.sampled_from(["none", "none", "none", "failure", "threat", "hijack"]),
        uptime=st.floats(0, 1),
        dt=st.one_of(st.integers(0, 10_000), st.integers(0, 2 * HOUR)),
    )
    def record(self, peer: str, sent: int, bad: str, uptime: float, dt: int) -> None:
        self._step(dt)
        cmd: dict[str, Any] = {
            "op": "trust.record",
            "peer": peer,
            "sent": sent,
            "uptime": uptime,
            "now": self.now,
        }
        if bad == "failure":
            cmd["integrity_failures"] = 1
        elif bad == "threat":
            cmd["threats"] = 1
        elif bad == "hijack":
            cmd["hijack"] = True
        self._apply(cmd)

    @rule(peer=st.sampled_from(PEERS), ok=st.booleans())
    def outcome(self, peer: str, ok: bool) -> None:
        self._apply({"op": "budget.outcome", "peer": peer, "ok": ok, "now": self.now})

    @rule(
        peer=st.sampled_from(PEERS),
        op=st.sampled_from(
            ["registry.evict", "registry.reactivate", "budget.suspend", "budget.reactivate",
             "budget.evict", "trust.reinstate", "registry.session_end"]
        ),
        dt=st.one_of(st.integers(0, HOUR), st.integers(0, 2 * DAY)),
    )  # fmt: skip
    def operator(self, peer: str, op: str, dt: int) -> None:
        self._step(dt)
        self._apply({"op": op, "peer": peer, "now": self.now})

    @rule(peer=st.sampled_from(PEERS))
    def grant(self, peer: str) -> None:
        self._apply(make_privileged_approval_command(KEYS["alice"], "alice", peer, self.now))

    @rule(pid=st.sampled_from(["a", "b", "c"]), dt=st.integers(0, 10_000))
    def propose(self, pid: str, dt: int) -> None:
        self.heartbeats(dt)  # keep sessions live so that there is an electorate
        self._apply(make_proposal_command(pid, "agent-spawn", {"n": 1}, self.now))

    @rule(
        pid=st.sampled_from(["a", "b", "c", "d", "e"]),
        ballots=st.lists(st.tuples(st.sampled_from(PEERS), st.booleans()), max_size=6),
    )
    def propose_and_vote(self, pid: str, ballots: list[tuple[str, bool]]) -> None:
        self.propose(pid, 0)
        for voter, approve in ballots:
            self.vote(pid, voter, approve, False, 1)

    @rule(
        pid=st.sampled_from(["a", "b", "c"]),
        voter=st.sampled_from(PEERS),
        approve=st.booleans(),
        forge=st.integers(0, 4).map(lambda x: x == 0),
        dt=st.integers(0, 3_000),
    )
    def vote(self, pid: str, voter: str, approve: bool, forge: bool, dt: int) -> None:
        self._step(dt)
        signer = KEYS["alice"] if forge else KEYS[voter]
        self._apply(make_vote_command(signer, pid, approve, self.now, voter=voter))

    @rule(
        state=st.sampled_from(["s0", "s1", "s2"]),
        action=st.integers(0, 8),
        reward=st.floats(-1.5, 1.5),
        nxt=st.sampled_from([None, "s0", "s1"]),
    )
    def learn(self, state: str, action: int, reward: float, nxt: str | None) -> None:
        cmd = {"op": "qtable.update", "state": state, "action": action, "reward": reward,
               "next_state": nxt, "now": self.now}  # fmt: skip
        self._apply(cmd)

    @rule(category=st.sampled_from(["pii", "security", "nope"]), dt=st.integers(0, 40 * DAY))
    def audit(self, category: str, dt: int) -> None:
        self._step(dt)
        self._apply({"op": "audit.append", "event_type": "x", "category": category,
                     "now": self.now})  # fmt: skip
        self._apply({"op": "audit.prune", "now": self.now})

    @rule(dt=st.integers(0, DAY))
    def tick(self, dt: int) -> None:
        self._step(dt)
        self._apply({"op": "federation.tick", "now": self.now})

    @rule(garbage=st.sampled_from([None, [], {"op": 5}, {"op": "x.y", "now": 1}, {"op": "trust"}]))
    def garbage(self, garbage: Any) -> None:
        for fed in self.replicas:
            before = fed.snapshot()
            try:
                fed.apply(garbage)
            except CommandError:
                pass
            else:
                raise AssertionError(f"garbage accepted: {garbage!r}")
            assert fed.snapshot() == before

    @invariant()
    def replicas_agree_and_invariants_hold(self) -> None:
        a, b = self.replicas
        assert a.snapshot() == b.snapshot()
        assert a.invariant_violations() == []

    def teardown(self) -> None:
        assert check_cross_replica([fed.snapshot() for fed in self.replicas]) == []


TestFederationStateful = FederationStateful.TestCase
TestFederationStateful.settings = settings(
    max_examples=30,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
