"""Trust ledger: per-peer interaction counters, the score formula and the trust ladder.

Every recorded interaction is a replicated command that re-evaluates the peer, so all
replicas compute the same level (the original never ran its evaluator: **gap** closed).

Score (clamped to [0, 1], rounded to 12 decimals so that float noise cannot flip a
threshold), over ``total = sent + received``::

    0.4·success + 0.2·uptime + 0.2·(1 - threat) + 0.2·integrity
    success   = (total - integrity failures) / total      (0 when total is 0)
    threat    = min(1, 10 · recent threats / total)        (0 when total is 0)
    integrity = 1 - integrity failures / total             (1 when total is 0)

"Recent threats" are the detections of the last 24 h (**gap**: the original never decays
threats). Ladder, one level per evaluation, upgrade checked first:

==========================  =========  ==========  ================
between                     up at ≥    down at <   min interactions
==========================  =========  ==========  ================
VERIFIED ↔ ATTESTED         0.70       0.50        50
ATTESTED ↔ TRUSTED          0.85       0.65        500
TRUSTED ↔ PRIVILEGED        0.95 (*)   0.80        5000
==========================  =========  ==========  ================

(*) PRIVILEGED is only *proposed* by the evaluator (``privileged_candidate``); it is granted
by ``grant_privileged``, a command signed by a registered human approver. Instant drop to
UNTRUSTED with score 0 on any integrity failure, a session-hijack attempt, or the second
threat detection within one hour. An UNTRUSTED peer stays there until an operator
``reinstate``\\ s it (to VERIFIED).

Commands (``trust.`` prefix optional; ``now`` in ms)::

    {"op": "register", "peer": p, "uptime": u?, "now": t}          # starts VERIFIED
    {"op": "handshake", "peer": p, "now": t}                       # VERIFIED -> ATTESTED
    {"op": "record", "peer": p, "sent": n, "received": n, "integrity_failures": n,
     "threats": n, "hijack": bool, "uptime": u, "now": t}          # all but peer optional
    {"op": "reinstate", "peer": p, "now": t}                       # UNTRUSTED -> VERIFIED
    {"op": "grant_privileged", "peer": p, "approver": a, "signature": b"...", "now": t}
    {"op": "add_approver", "approver": a, "public_key": b"...", "endorser": e,
     "signature": b"...", "now": t}
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import nacl.signing

from ruflo_consensus.federation.base import PlannedMachine
from ruflo_consensus.federation.errors import (
    InvalidTransition,
    NotEligible,
    PeerExists,
    Replayed,
    StaleTimestamp,
    UnknownApprover,
    UnknownPeer,
)
from ruflo_consensus.federation.signing import (
    PUBLIC_KEY_LEN,
    public_key_bytes,
    sign_statement,
    verify_statement,
)
from ruflo_consensus.federation.validation import (
    Commit,
    check_fields,
    opt_bool,
    opt_int,
    opt_number,
    req_bytes,
    req_str,
)
from ruflo_consensus.federation.wire import (
    w_bool,
    w_bytes,
    w_choice,
    w_clock,
    w_count,
    w_float,
    w_int,
    w_list,
    w_map,
    w_opt_text,
    w_opt_time,
    w_pairs,
    w_row,
    w_time,
)

__all__ = [
    "APPROVAL_KIND",
    "APPROVER_KIND",
    "CAPABILITIES",
    "DEFAULT_LADDER",
    "PeerTrust",
    "Rung",
    "TrustLedger",
    "TrustLevel",
    "TrustPolicy",
    "ladder_step",
    "make_add_approver_command",
    "make_privileged_approval_command",
    "trust_score",
]

APPROVAL_KIND = "ruflo.privileged-approval.v1"
"""Domain tag of a human approval of a PRIVILEGED upgrade."""
APPROVER_KIND = "ruflo.approver-add.v1"
"""Domain tag of an approver endorsing a new approver."""

_MAX_COUNT = 1_000_000
_MAX_THREAT_SAMPLES = 1_000_000
_DROP_REASONS = ("integrity-failure", "session-hijack", "threat-detections")


class TrustLevel(enum.IntEnum):
    """The trust ladder (spec values)."""

    UNTRUSTED = 0
    VERIFIED = 1
    ATTESTED = 2
    TRUSTED = 3
    PRIVILEGED = 4


CAPABILITIES: dict[str, TrustLevel] = {
    "discovery": TrustLevel.UNTRUSTED,
    "status": TrustLevel.VERIFIED,
    "ping": TrustLevel.VERIFIED,
    "send": TrustLevel.ATTESTED,
    "receive": TrustLevel.ATTESTED,
    "query-redacted": TrustLevel.ATTESTED,
    "share-context": TrustLevel.TRUSTED,
    "collaborative-task": TrustLevel.TRUSTED,
    "full-memory": TrustLevel.PRIVILEGED,
    "remote-spawn": TrustLevel.PRIVILEGED,
}
"""The lowest level that unlocks each capability (each level includes those below it)."""


@dataclass(frozen=True, slots=True)
class Rung:
    """The transition between ``lower`` and the level above it."""

    lower: TrustLevel
    upgrade_at: float
    downgrade_below: float
    min_interactions: int


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung(TrustLevel.VERIFIED, 0.70, 0.50, 50),
    Rung(TrustLevel.ATTESTED, 0.85, 0.65, 500),
    Rung(TrustLevel.TRUSTED, 0.95, 0.80, 5000),
)
"""The spec's thresholds, hysteresis and minimum interactions."""


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Numbers of the trust ledger; the defaults are the spec's (decay is our gap choice)."""

    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    threat_drop_count: int = 2
    threat_drop_window_ms: int = 3_600_000
    threat_decay_ms: int = 86_400_000
    max_threat_samples: int = 1_000
    initial_uptime: float = 1.0
    approval_max_age_ms: int = 300_000


def trust_score(
    sent: int, received: int, integrity_failures: int, threats: int, uptime: float
) -> float:
    """The spec's score, clamped to [0, 1] and rounded to 12 decimals."""
    total = sent + received
    if total == 0:
        success = 0.0
        threat = 0.0
        integrity = 1.0
    else:
        success = (total - integrity_failures) / total
        threat = min(1.0, 10.0 * threats / total)
        integrity = 1.0 - integrity_failures / total
    raw = 0.4 * success + 0.2 * uptime + 0.2 * (1.0 - threat) + 0.2 * integrity
    return round(min(1.0, max(0.0, raw)), 12)


def ladder_step(
    level: TrustLevel, score: float, interactions: int, ladder: tuple[Rung, ...] = DEFAULT_LADDER
) -> tuple[TrustLevel, bool]:
    """One evaluation: return ``(new level, privileged_candidate)``.

    Upgrade is checked first; PRIVILEGED is never entered here, only flagged as a candidate.
    UNTRUSTED never moves (it needs an operator's ``reinstate``).
    """
    if level == TrustLevel.UNTRUSTED:
        return level, False
    candidate = False
    for rung in ladder:
        if (
            rung.lower == level
            and score >= rung.upgrade_at
            and interactions >= rung.min_interactions
        ):
            upper = TrustLevel(level + 1)
            if upper == TrustLevel.PRIVILEGED:
                candidate = True
            else:
                return upper, False
    for rung in ladder:
        if rung.lower + 1 == level and score < rung.downgrade_below:
            return rung.lower, False
    return level, candidate


@dataclass(slots=True)
class PeerTrust:
    """Replicated trust state of one peer."""

    level: TrustLevel = TrustLevel.VERIFIED
    score: float = 0.0
    sent: int = 0
    received: int = 0
    integrity_failures: int = 0
    threats_total: int = 0
    threat_times: list[int] = field(default_factory=list)
    uptime: float = 1.0
    privileged_candidate: bool = False
    dropped_at: int | None = None
    drop_reason: str | None = None
    last_approval: int | None = None
    changed_at: int = 0

    @property
    def interactions(self) -> int:
        """Messages sent plus received."""
        return self.sent + self.received

    def recent_threats(self, t: int, decay_ms: int) -> int:
        """Threat detections within the decay window ending at ``t``."""
        return sum(1 for ts in self.threat_times if t - ts < decay_ms)

    def to_wire(self) -> list[Any]:
        """Plain list form used in snapshots."""
        return [
            int(self.level),
            self.score,
            self.sent,
            self.received,
            self.integrity_failures,
            self.threats_total,
            list(self.threat_times),
            self.uptime,
            self.privileged_candidate,
            self.dropped_at,
            self.drop_reason,
            self.last_approval,
            self.changed_at,
        ]

    @classmethod
    def from_wire(cls, value: Any) -> PeerTrust:
        """Inverse of :meth:`to_wire`; every field checked, ``BadSnapshot`` otherwise."""
        row = w_row(value, "trust record", 13)
        (lvl, score, sent, recv, fails, threats, times, up, cand, dropped, why, appr, ch) = row
        reason = w_opt_text(why, "drop_reason")
        if reason is not None:
            w_choice(reason, "drop_reason", _DROP_REASONS)
        return cls(
            level=TrustLevel(w_int(lvl, "level", lo=0, hi=int(TrustLevel.PRIVILEGED))),
            score=w_float(score, "score", lo=0.0, hi=1.0),
            sent=w_count(sent, "sent"),
            received=w_count(recv, "received"),
            integrity_failures=w_count(fails, "integrity_failures"),
            threats_total=w_count(threats, "threats_total"),
            threat_times=[
                w_time(x, "threat time")
                for x in w_list(times, "threat_times", max_items=_MAX_THREAT_SAMPLES)
            ],
            uptime=w_float(up, "uptime", lo=0.0, hi=1.0),
            privileged_candidate=w_bool(cand, "privileged_candidate"),
            dropped_at=w_opt_time(dropped, "dropped_at"),
            drop_reason=reason,
            last_approval=w_opt_time(appr, "last_approval"),
            changed_at=w_time(ch, "changed_at"),
        )


def _result(peer: str, rec: PeerTrust, previous: TrustLevel, **extra: Any) -> dict[str, Any]:
    out = {
        "peer": peer,
        "level": rec.level.name,
        "previous": previous.name,
        "changed": rec.level != previous,
        "score": rec.score,
        "privileged_candidate": rec.privileged_candidate,
    }
    out.update(extra)
    return out


class TrustLedger(PlannedMachine):
    """Replicated trust ledger: scores, the ladder, instant drops and capability gates."""

    namespace = "trust"
    ops = ("register", "handshake", "record", "reinstate", "grant_privileged", "add_approver")

    def __init__(
        self, policy: TrustPolicy | None = None, approvers: Mapping[str, bytes] | None = None
    ) -> None:
        super().__init__()
        self.policy = policy or TrustPolicy()
        self.peers: dict[str, PeerTrust] = {}
        self.approvers: dict[str, bytes] = dict(approvers or {})
        for approver, key in self.approvers.items():
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_LEN:
                raise ValueError(f"approver {approver!r} needs a 32-byte public key")

    # ----------------------------------------------------------------- queries

    def level(self, peer: str) -> TrustLevel | None:
        """The peer's level, ``None`` for an unknown peer."""
        rec = self.peers.get(peer)
        return None if rec is None else rec.level

    def can(self, peer: str, capability: str) -> bool:
        """True when ``peer``'s level unlocks ``capability`` (e.g. ``"send"``)."""
        needed = CAPABILITIES.get(capability)
        if needed is None:
            raise ValueError(f"unknown capability {capability!r}; known: {sorted(CAPABILITIES)}")
        rec = self.peers.get(peer)
        return rec is not None and rec.level >= needed

    def require(self, peer: str) -> PeerTrust:
        """The trust record of ``peer``; :class:`UnknownPeer` when there is none."""
        rec = self.peers.get(peer)
        if rec is None:
            raise UnknownPeer(f"no trust record for {peer!r}")
        return rec

    def score_now(self, peer: str, t: int) -> float:
        """The formula's score for ``peer`` at ``t`` (0 while UNTRUSTED)."""
        rec = self.require(peer)
        if rec.level == TrustLevel.UNTRUSTED:
            return 0.0
        return self._formula(rec, t)

    def _formula(self, rec: PeerTrust, t: int) -> float:
        threats = rec.recent_threats(t, self.policy.threat_decay_ms)
        return trust_score(rec.sent, rec.received, rec.integrity_failures, threats, rec.uptime)

    # ------------------------------------------------------------------ plans

    def _plan_register(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "uptime"))
        peer = req_str(cmd, "peer")
        uptime = opt_number(cmd, "uptime", self.policy.initial_uptime, lo=0.0, hi=1.0)
        assert uptime is not None
        if peer in self.peers:
            raise PeerExists(f"peer {peer!r} already has a trust record")

        def commit() -> dict[str, Any]:
            rec = PeerTrust(level=TrustLevel.VERIFIED, uptime=uptime, changed_at=t)
            rec.score = self._formula(rec, t)
            self.peers[peer] = rec
            return _result(peer, rec, TrustLevel.UNTRUSTED)

        return commit

    def _plan_handshake(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        peer = req_str(cmd, "peer")
        rec = self.require(peer)

        def commit() -> dict[str, Any]:
            previous = rec.level
            if rec.level == TrustLevel.VERIFIED:
                rec.level = TrustLevel.ATTESTED
                rec.privileged_candidate = False
                rec.changed_at = t
            return _result(peer, rec, previous)

        return commit

    def _plan_record(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(
            cmd, ("peer", "sent", "received", "integrity_failures", "threats", "hijack", "uptime")
        )
        peer = req_str(cmd, "peer")
        rec = self.require(peer)
        sent = opt_int(cmd, "sent", 0, hi=_MAX_COUNT)
        received = opt_int(cmd, "received", 0, hi=_MAX_COUNT)
        failures = opt_int(cmd, "integrity_failures", 0, hi=_MAX_COUNT)
        threats = opt_int(cmd, "threats", 0, hi=_MAX_COUNT)
        hijack = opt_bool(cmd, "hijack", False)
        uptime = opt_number(cmd, "uptime", None, lo=0.0, hi=1.0)
        return lambda: self._record(peer, rec, t, sent, received, failures, threats, hijack, uptime)

    def _record(
        self,
        peer: str,
        rec: PeerTrust,
        t: int,
        sent: int,
        received: int,
        failures: int,
        threats: int,
        hijack: bool,
        uptime: float | None,
    ) -> dict[str, Any]:
        policy = self.policy
        previous = rec.level
        rec.sent += sent
        rec.received += received
        rec.integrity_failures += failures
        rec.threats_total += threats
        if uptime is not None:
            rec.uptime = uptime
        horizon = max(policy.threat_decay_ms, policy.threat_drop_window_ms)
        times = [ts for ts in rec.threat_times if t - ts < horizon]
        times.extend([t] * min(threats, policy.max_threat_samples))
        rec.threat_times = times[-policy.max_threat_samples :]
        in_window = sum(1 for ts in rec.threat_times if t - ts < policy.threat_drop_window_ms)
        reason = None
        if failures > 0:
            reason = "integrity-failure"
        elif hijack:
            reason = "session-hijack"
        elif threats > 0 and in_window >= policy.threat_drop_count:
            reason = "threat-detections"
        if reason is not None:
            rec.level = TrustLevel.UNTRUSTED
            rec.score = 0.0
            rec.privileged_candidate = False
            rec.dropped_at = t
            rec.drop_reason = reason
        elif rec.level != TrustLevel.UNTRUSTED:
            rec.score = self._formula(rec, t)
            rec.level, rec.privileged_candidate = ladder_step(
                rec.level, rec.score, rec.interactions, policy.ladder
            )
        if rec.level != previous:
            rec.changed_at = t
        return _result(peer, rec, previous, dropped=reason is not None, drop_reason=reason)

    def _plan_reinstate(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        peer = req_str(cmd, "peer")
        rec = self.require(peer)
        if rec.level != TrustLevel.UNTRUSTED:
            raise InvalidTransition(f"peer {peer!r} is {rec.level.name}, not UNTRUSTED")

        def commit() -> dict[str, Any]:
            rec.level = TrustLevel.VERIFIED
            rec.threat_times = []
            rec.score = self._formula(rec, t)
            rec.changed_at = t
            return _result(peer, rec, TrustLevel.UNTRUSTED)

        return commit

    def _plan_grant_privileged(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "approver", "signature"))
        peer = req_str(cmd, "peer")
        rec = self.require(peer)
        approver = req_str(cmd, "approver")
        key = self.approvers.get(approver)
        if key is None:
            raise UnknownApprover(f"no approver {approver!r}")
        signed_at = cmd["now"]
        statement = {"kind": APPROVAL_KIND, "peer": peer, "approver": approver, "now": signed_at}
        verify_statement(key, statement, cmd.get("signature"))
        if t - signed_at > self.policy.approval_max_age_ms:
            raise StaleTimestamp("the approval is too old")
        if rec.last_approval is not None and signed_at <= rec.last_approval:
            raise Replayed("an approval at or after this time was already used")
        if rec.level != TrustLevel.TRUSTED or not rec.privileged_candidate:
            raise NotEligible(f"peer {peer!r} is not a PRIVILEGED candidate")

        def commit() -> dict[str, Any]:
            rec.level = TrustLevel.PRIVILEGED
            rec.privileged_candidate = False
            rec.last_approval = signed_at
            rec.changed_at = t
            return _result(peer, rec, TrustLevel.TRUSTED, approver=approver)

        return commit

    def _plan_add_approver(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("approver", "public_key", "endorser", "signature"))
        approver = req_str(cmd, "approver")
        public_key = req_bytes(cmd, "public_key", length=PUBLIC_KEY_LEN)
        endorser = req_str(cmd, "endorser")
        key = self.approvers.get(endorser)
        if key is None:
            raise UnknownApprover(f"no approver {endorser!r}")
        statement = {
            "kind": APPROVER_KIND,
            "approver": approver,
            "public_key": public_key,
            "now": cmd["now"],
        }
        verify_statement(key, statement, cmd.get("signature"))
        if t - cmd["now"] > self.policy.approval_max_age_ms:
            raise StaleTimestamp("the endorsement is too old")
        if approver in self.approvers:
            raise PeerExists(f"approver {approver!r} already exists")

        def commit() -> dict[str, Any]:
            self.approvers[approver] = public_key
            return {"approver": approver, "endorser": endorser}

        return commit

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form of the whole state."""
        return {
            "clock": self.clock,
            "approvers": [[a, self.approvers[a]] for a in sorted(self.approvers)],
            "peers": [[p, self.peers[p].to_wire()] for p in sorted(self.peers)],
        }

    def _blank(self) -> Self:
        return type(self)(self.policy)

    def _read_wire(self, value: Any) -> None:
        wire = w_map(value, "trust", ("clock", "approvers", "peers"))
        self.clock = w_clock(wire["clock"])
        for approver, key in w_pairs(wire["approvers"], "approvers"):
            self.approvers[approver] = w_bytes(key, "approver key", length=PUBLIC_KEY_LEN)
        for peer, raw in w_pairs(wire["peers"], "peers"):
            self.peers[peer] = PeerTrust.from_wire(raw)


# ------------------------------------------------------------- client helpers


def make_privileged_approval_command(
    approver_key: nacl.signing.SigningKey, approver: str, peer: str, now: int
) -> dict[str, Any]:
    """Build a ``trust.grant_privileged`` command signed by a human approver's key."""
    statement = {"kind": APPROVAL_KIND, "peer": peer, "approver": approver, "now": now}
    return {
        "op": "trust.grant_privileged",
        "peer": peer,
        "approver": approver,
        "signature": sign_statement(approver_key, statement),
        "now": now,
    }


def make_add_approver_command(
    endorser_key: nacl.signing.SigningKey,
    endorser: str,
    approver: str,
    approver_key: nacl.signing.SigningKey | bytes,
    now: int,
) -> dict[str, Any]:
    """Build a ``trust.add_approver`` command: an existing approver endorses a new one."""
    public_key = approver_key if isinstance(approver_key, bytes) else public_key_bytes(approver_key)
    statement = {"kind": APPROVER_KIND, "approver": approver, "public_key": public_key, "now": now}
    return {
        "op": "trust.add_approver",
        "approver": approver,
        "public_key": public_key,
        "endorser": endorser,
        "signature": sign_statement(endorser_key, statement),
        "now": now,
    }
