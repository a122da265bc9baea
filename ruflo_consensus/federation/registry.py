"""Peer registry: who is in the federation, under which key, and whether it has a session.

A peer joins with a **signed manifest** (node id, Ed25519 public key, endpoint, capabilities,
version, timestamp); the signature is verified inside ``apply`` so every replica admits the
same peers. A completed **handshake** (the peer's signature over a fresh challenge nonce)
opens a session that lasts 1 h by default (at most 24 h) and is *overdue* once three 30 s
heartbeats are missed.

Commands (``op`` may carry the ``registry.`` prefix; ``now`` is an int of milliseconds)::

    {"op": "join", "manifest": {...}, "signature": b"...", "now": t}
    {"op": "update", "manifest": {...}, "signature": b"...", "now": t}
    {"op": "handshake", "peer": id, "session_id": s, "nonce": b"...", "issued_at": t0,
     "duration_ms": d, "signature": b"...", "now": t}
    {"op": "heartbeat", "peer": id, "now": t}
    {"op": "session_end", "peer": id, "now": t}
    {"op": "evict", "peer": id, "reason": r, "now": t}
    {"op": "reactivate", "peer": id, "now": t}

Use :func:`make_join_command`, :func:`make_update_command` and
:func:`make_handshake_command` to build the signed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

import nacl.signing

from ruflo_consensus.federation.base import PlannedMachine
from ruflo_consensus.federation.errors import (
    BadArgument,
    BadSnapshot,
    InvalidTransition,
    NoSession,
    PeerEvicted,
    PeerExists,
    Replayed,
    StaleTimestamp,
    UnknownPeer,
)
from ruflo_consensus.federation.signing import (
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    public_key_bytes,
    sign_statement,
    verify_statement,
)
from ruflo_consensus.federation.validation import (
    Commit,
    ErrorType,
    check_fields,
    opt_int,
    opt_str,
    req_bytes,
    req_int,
    req_str,
    req_str_list,
)
from ruflo_consensus.federation.wire import (
    w_bytes,
    w_choice,
    w_clock,
    w_map,
    w_opt_text,
    w_opt_time,
    w_pairs,
    w_row,
    w_rows,
    w_time,
)

__all__ = [
    "CHALLENGE_TIMEOUT_MS",
    "COMPLIANCE_MODES",
    "HEARTBEAT_INTERVAL_MS",
    "MANIFEST_KIND",
    "MISSED_HEARTBEATS",
    "SESSION_DEFAULT_MS",
    "SESSION_MAX_MS",
    "Manifest",
    "PeerRecord",
    "PeerRegistry",
    "challenge_statement",
    "make_handshake_command",
    "make_join_command",
    "make_update_command",
    "manifest_statement",
]

SESSION_DEFAULT_MS = 3_600_000
"""Sessions last 1 hour by default (spec)."""
SESSION_MAX_MS = 86_400_000
"""Sessions last at most 24 hours (spec)."""
HEARTBEAT_INTERVAL_MS = 30_000
"""Heartbeat period (spec: 30 s)."""
MISSED_HEARTBEATS = 3
"""A session is overdue after this many missed heartbeats (spec: 3)."""
CHALLENGE_TIMEOUT_MS = 10_000
"""A handshake challenge is answered within 10 s of being issued (spec)."""
COMPLIANCE_MODES = frozenset({"hipaa", "soc2", "gdpr", "none"})
"""Compliance modes a manifest may declare (spec)."""
MANIFEST_KIND = "ruflo.manifest.v1"
"""Domain tag of signed manifests."""
CHALLENGE_KIND = "ruflo.challenge-response.v1"
"""Domain tag of signed handshake responses."""

_MANIFEST_FIELDS = ("node_id", "public_key", "endpoint", "capabilities", "version", "timestamp")
_CAPABILITY_FIELDS = ("agent_types", "max_concurrent_sessions", "protocols", "compliance_modes")
_NONCE_MIN, _NONCE_MAX = 16, 64
_MAX_NONCES = 100_000
_REASON_LEN = 512
PEER_STATUSES = ("active", "evicted")
SESSION_STATES = ("none", "active", "ended")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A peer's self-description, signed with its own key."""

    node_id: str
    public_key: bytes
    endpoint: str
    agent_types: tuple[str, ...]
    max_concurrent_sessions: int
    protocols: tuple[str, ...]
    compliance_modes: tuple[str, ...]
    version: str
    timestamp: int

    def to_wire(self) -> dict[str, Any]:
        """The manifest as the plain map that is signed and sent."""
        return {
            "node_id": self.node_id,
            "public_key": self.public_key,
            "endpoint": self.endpoint,
            "capabilities": {
                "agent_types": list(self.agent_types),
                "max_concurrent_sessions": self.max_concurrent_sessions,
                "protocols": list(self.protocols),
                "compliance_modes": list(self.compliance_modes),
            },
            "version": self.version,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_wire(cls, value: Any, error: ErrorType = BadArgument) -> Manifest:
        """Parse and validate a manifest map; raise ``error`` (``BAD_ARGUMENT``) if malformed."""
        if not isinstance(value, dict):
            raise error("'manifest' must be a map")
        check_fields(value, _MANIFEST_FIELDS, error=error)
        caps = value.get("capabilities")
        if not isinstance(caps, dict):
            raise error("'capabilities' must be a map")
        check_fields(caps, _CAPABILITY_FIELDS, error=error)
        return cls(
            node_id=req_str(value, "node_id", max_len=128, error=error),
            public_key=req_bytes(value, "public_key", length=PUBLIC_KEY_LEN, error=error),
            endpoint=req_str(value, "endpoint", max_len=512, error=error),
            agent_types=tuple(req_str_list(caps, "agent_types", error=error)),
            max_concurrent_sessions=req_int(
                caps, "max_concurrent_sessions", lo=1, hi=100_000, error=error
            ),
            protocols=tuple(req_str_list(caps, "protocols", max_items=16, error=error)),
            compliance_modes=tuple(
                req_str_list(
                    caps, "compliance_modes", max_items=4, allowed=COMPLIANCE_MODES, error=error
                )
            ),
            version=req_str(value, "version", max_len=64, error=error),
            timestamp=req_int(value, "timestamp", lo=0, hi=2**53, error=error),
        )


def manifest_statement(manifest: dict[str, Any]) -> dict[str, Any]:
    """The statement a manifest signature covers."""
    return {"kind": MANIFEST_KIND, "manifest": manifest}


def challenge_statement(
    peer: str, session_id: str, nonce: bytes, issued_at: int, duration_ms: int
) -> dict[str, Any]:
    """The statement a handshake response signature covers."""
    return {
        "kind": CHALLENGE_KIND,
        "peer": peer,
        "session_id": session_id,
        "nonce": nonce,
        "issued_at": issued_at,
        "duration_ms": duration_ms,
    }


@dataclass(slots=True)
class PeerRecord:
    """One registered peer, as replicated."""

    manifest: Manifest
    signature: bytes
    status: str = "active"
    joined_at: int = 0
    last_seen: int = 0
    evicted_at: int | None = None
    evict_reason: str | None = None
    session_state: str = "none"
    session_id: str | None = None
    session_started: int | None = None
    session_expires: int | None = None
    recent_nonces: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        """The peer's node id."""
        return self.manifest.node_id

    @property
    def endpoint(self) -> str:
        """Where the peer listens."""
        return self.manifest.endpoint

    @property
    def public_key(self) -> bytes:
        """The peer's Ed25519 public key."""
        return self.manifest.public_key

    @property
    def agent_types(self) -> tuple[str, ...]:
        """Agent types the peer offers."""
        return self.manifest.agent_types

    def session_status(self, t: int) -> str:
        """``none``, ``active``, ``overdue``, ``expired`` or ``ended`` at time ``t``."""
        if self.session_state == "none":
            return "none"
        if self.session_state != "active":
            return "ended"
        assert self.session_expires is not None
        if t >= self.session_expires:
            return "expired"
        if t - self.last_seen > HEARTBEAT_INTERVAL_MS * MISSED_HEARTBEATS:
            return "overdue"
        return "active"

    def session_live(self, t: int) -> bool:
        """True when the peer is active and its session is neither expired nor overdue."""
        return self.status == "active" and self.session_status(t) == "active"

    def to_wire(self) -> list[Any]:
        """Plain list form used in snapshots."""
        return [
            self.manifest.to_wire(),
            self.signature,
            self.status,
            self.joined_at,
            self.last_seen,
            self.evicted_at,
            self.evict_reason,
            self.session_state,
            self.session_id,
            self.session_started,
            self.session_expires,
            [[ts, nonce] for ts, nonce in self.recent_nonces],
        ]

    @classmethod
    def from_wire(cls, value: Any) -> PeerRecord:
        """Inverse of :meth:`to_wire`; every field checked, ``BadSnapshot`` otherwise."""
        (
            manifest,
            signature,
            status,
            joined_at,
            last_seen,
            evicted_at,
            evict_reason,
            session_state,
            session_id,
            session_started,
            session_expires,
            nonces,
        ) = w_row(value, "peer record", 12)
        record = cls(
            manifest=Manifest.from_wire(manifest, error=BadSnapshot),
            signature=w_bytes(signature, "signature", length=SIGNATURE_LEN),
            status=w_choice(status, "status", PEER_STATUSES),
            joined_at=w_time(joined_at, "joined_at"),
            last_seen=w_time(last_seen, "last_seen"),
            evicted_at=w_opt_time(evicted_at, "evicted_at"),
            evict_reason=w_opt_text(evict_reason, "evict_reason", max_len=_REASON_LEN),
            session_state=w_choice(session_state, "session_state", SESSION_STATES),
            session_id=w_opt_text(session_id, "session_id"),
            session_started=w_opt_time(session_started, "session_started"),
            session_expires=w_opt_time(session_expires, "session_expires"),
            recent_nonces=[
                (
                    w_time(ts, "nonce time"),
                    w_bytes(n, "nonce", min_len=_NONCE_MIN, max_len=_NONCE_MAX),
                )
                for ts, n in w_rows(nonces, "recent_nonces", 2, max_items=_MAX_NONCES)
            ],
        )
        if record.session_state == "active" and record.session_expires is None:
            raise BadSnapshot("an active session needs an expiry time")
        return record

    def describe(self, t: int) -> dict[str, Any]:
        """A summary map (for results and operators)."""
        return {
            "peer": self.node_id,
            "endpoint": self.endpoint,
            "agent_types": list(self.agent_types),
            "status": self.status,
            "session": self.session_status(t),
            "last_seen": self.last_seen,
        }


class PeerRegistry(PlannedMachine):
    """Replicated registry of peers: join, update, handshake, heartbeat, evict, reactivate."""

    namespace = "registry"
    ops = ("join", "update", "handshake", "heartbeat", "session_end", "evict", "reactivate")

    def __init__(self) -> None:
        super().__init__()
        self.peers: dict[str, PeerRecord] = {}

    # ----------------------------------------------------------------- queries

    def get(self, peer: str) -> PeerRecord | None:
        """The record of ``peer`` or ``None``."""
        return self.peers.get(peer)

    def peer_ids(self) -> list[str]:
        """All registered node ids, sorted (evicted ones included)."""
        return sorted(self.peers)

    def require(self, peer: str) -> PeerRecord:
        """The record of ``peer``; :class:`UnknownPeer` if there is none."""
        record = self.peers.get(peer)
        if record is None:
            raise UnknownPeer(f"no peer {peer!r}")
        return record

    def require_active(self, peer: str) -> PeerRecord:
        """The record of a known, non-evicted ``peer``."""
        record = self.require(peer)
        if record.status == "evicted":
            raise PeerEvicted(f"peer {peer!r} is evicted")
        return record

    # ------------------------------------------------------------------ plans

    def _parse_signed_manifest(self, cmd: dict[str, Any]) -> tuple[Manifest, bytes]:
        check_fields(cmd, ("manifest", "signature"))
        manifest = Manifest.from_wire(cmd.get("manifest"))
        signature = cmd.get("signature")
        verify_statement(manifest.public_key, manifest_statement(manifest.to_wire()), signature)
        assert isinstance(signature, (bytes, bytearray))
        return manifest, bytes(signature)

    def _plan_join(self, cmd: dict[str, Any], t: int) -> Commit:
        manifest, signature = self._parse_signed_manifest(cmd)
        if manifest.node_id in self.peers:
            raise PeerExists(f"peer {manifest.node_id!r} is already registered")
        for other in self.peers.values():
            if other.public_key == manifest.public_key:
                raise PeerExists("this public key is already registered to another peer")

        def commit() -> dict[str, Any]:
            record = PeerRecord(manifest=manifest, signature=signature, joined_at=t, last_seen=t)
            self.peers[manifest.node_id] = record
            return record.describe(t)

        return commit

    def _plan_update(self, cmd: dict[str, Any], t: int) -> Commit:
        manifest, signature = self._parse_signed_manifest(cmd)
        record = self.require_active(manifest.node_id)
        if manifest.public_key != record.public_key:
            raise BadArgument("a manifest update must keep the registered public key")
        if manifest.timestamp <= record.manifest.timestamp:
            raise Replayed("manifest is not newer than the registered one")

        def commit() -> dict[str, Any]:
            record.manifest = manifest
            record.signature = signature
            record.last_seen = max(record.last_seen, t)
            return record.describe(t)

        return commit

    def _plan_handshake(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "session_id", "nonce", "issued_at", "duration_ms", "signature"))
        peer = req_str(cmd, "peer")
        record = self.require_active(peer)
        session_id = req_str(cmd, "session_id")
        nonce = req_bytes(cmd, "nonce", min_len=16, max_len=64)
        issued_at = req_int(cmd, "issued_at", lo=0, hi=2**53)
        duration = opt_int(cmd, "duration_ms", SESSION_DEFAULT_MS, lo=1, hi=SESSION_MAX_MS)
        statement = challenge_statement(peer, session_id, nonce, issued_at, duration)
        verify_statement(record.public_key, statement, cmd.get("signature"))
        if abs(t - issued_at) > CHALLENGE_TIMEOUT_MS:
            raise StaleTimestamp("the handshake challenge has timed out")
        if any(seen == nonce for _, seen in record.recent_nonces):
            raise Replayed("this challenge nonce was already answered")

        def commit() -> dict[str, Any]:
            horizon = t - CHALLENGE_TIMEOUT_MS
            kept = [(ts, n) for ts, n in record.recent_nonces if ts >= horizon]
            kept.append((issued_at, nonce))
            record.recent_nonces = sorted(kept)
            record.session_state = "active"
            record.session_id = session_id
            record.session_started = t
            record.session_expires = t + duration
            record.last_seen = max(record.last_seen, t)
            result = record.describe(t)
            result["session_id"] = session_id
            result["session_expires"] = record.session_expires
            return result

        return commit

    def _plan_heartbeat(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        record = self.require_active(req_str(cmd, "peer"))
        if record.session_status(t) != "active":
            raise NoSession(f"peer {record.node_id!r} has no live session")

        def commit() -> dict[str, Any]:
            record.last_seen = max(record.last_seen, t)
            return record.describe(t)

        return commit

    def _plan_session_end(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        record = self.require_active(req_str(cmd, "peer"))
        if record.session_state != "active":
            raise NoSession(f"peer {record.node_id!r} has no open session")

        def commit() -> dict[str, Any]:
            record.session_state = "ended"
            return record.describe(t)

        return commit

    def _plan_evict(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "reason"))
        record = self.require_active(req_str(cmd, "peer"))
        reason = opt_str(cmd, "reason", max_len=512) or "operator"
        return lambda: self.mark_evicted(record.node_id, t, reason)

    def _plan_reactivate(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        record = self.require(req_str(cmd, "peer"))
        if record.status != "evicted":
            raise InvalidTransition(f"peer {record.node_id!r} is not evicted")
        return lambda: self.mark_active(record.node_id, t)

    # ------------------------------------------------- infallible state moves

    def mark_evicted(self, peer: str, t: int, reason: str) -> dict[str, Any]:
        """Evict a known peer and end its session (no checks; used by commits)."""
        record = self.peers[peer]
        record.status = "evicted"
        record.evicted_at = t
        record.evict_reason = reason
        if record.session_state == "active":
            record.session_state = "ended"
        return record.describe(t)

    def mark_active(self, peer: str, t: int) -> dict[str, Any]:
        """Reactivate a known peer (no checks; used by commits). It needs a new handshake."""
        record = self.peers[peer]
        record.status = "active"
        record.evicted_at = None
        record.evict_reason = None
        record.last_seen = max(record.last_seen, t)
        return record.describe(t)

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form of the whole state."""
        return {
            "clock": self.clock,
            "peers": [[pid, self.peers[pid].to_wire()] for pid in sorted(self.peers)],
        }

    def _blank(self) -> Self:
        return type(self)()

    def _read_wire(self, value: Any) -> None:
        wire = w_map(value, "registry", ("clock", "peers"))
        self.clock = w_clock(wire["clock"])
        keys: set[bytes] = set()
        for pid, raw in w_pairs(wire["peers"], "peers", max_key_len=128):
            record = PeerRecord.from_wire(raw)
            if record.node_id != pid:
                raise BadSnapshot(f"peer {pid!r} holds the manifest of {record.node_id!r}")
            if record.public_key in keys:
                raise BadSnapshot("two peers are registered under the same public key")
            keys.add(record.public_key)
            self.peers[pid] = record


# ------------------------------------------------------------- client helpers


def _manifest_wire(
    signing_key: nacl.signing.SigningKey,
    node_id: str,
    endpoint: str,
    agent_types: list[str] | tuple[str, ...],
    timestamp: int,
    max_concurrent_sessions: int,
    protocols: list[str] | tuple[str, ...],
    compliance_modes: list[str] | tuple[str, ...],
    version: str,
) -> dict[str, Any]:
    return Manifest(
        node_id=node_id,
        public_key=public_key_bytes(signing_key),
        endpoint=endpoint,
        agent_types=tuple(agent_types),
        max_concurrent_sessions=max_concurrent_sessions,
        protocols=tuple(protocols),
        compliance_modes=tuple(compliance_modes),
        version=version,
        timestamp=timestamp,
    ).to_wire()


def make_join_command(
    signing_key: nacl.signing.SigningKey,
    node_id: str,
    endpoint: str,
    agent_types: list[str] | tuple[str, ...],
    now: int,
    *,
    timestamp: int | None = None,
    max_concurrent_sessions: int = 16,
    protocols: list[str] | tuple[str, ...] = ("wss",),
    compliance_modes: list[str] | tuple[str, ...] = ("none",),
    version: str = "1.0",
    op: str = "registry.join",
) -> dict[str, Any]:
    """Build a ``registry.join`` command with a manifest signed by ``signing_key``."""
    manifest = _manifest_wire(
        signing_key,
        node_id,
        endpoint,
        agent_types,
        now if timestamp is None else timestamp,
        max_concurrent_sessions,
        protocols,
        compliance_modes,
        version,
    )
    signature = sign_statement(signing_key, manifest_statement(manifest))
    return {"op": op, "manifest": manifest, "signature": signature, "now": now}


def make_update_command(
    signing_key: nacl.signing.SigningKey,
    node_id: str,
    endpoint: str,
    agent_types: list[str] | tuple[str, ...],
    now: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """Build a ``registry.update`` command (same arguments as :func:`make_join_command`)."""
    kwargs.setdefault("op", "registry.update")
    return make_join_command(signing_key, node_id, endpoint, agent_types, now, **kwargs)


def make_handshake_command(
    signing_key: nacl.signing.SigningKey,
    peer: str,
    session_id: str,
    nonce: bytes,
    issued_at: int,
    now: int,
    *,
    duration_ms: int = SESSION_DEFAULT_MS,
    op: str = "registry.handshake",
) -> dict[str, Any]:
    """Build a ``registry.handshake`` command: the peer's signed answer to a challenge nonce."""
    statement = challenge_statement(peer, session_id, nonce, issued_at, duration_ms)
    return {
        "op": op,
        "peer": peer,
        "session_id": session_id,
        "nonce": nonce,
        "issued_at": issued_at,
        "duration_ms": duration_ms,
        "signature": sign_statement(signing_key, statement),
        "now": now,
    }
