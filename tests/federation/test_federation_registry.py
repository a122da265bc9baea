"""Peer registry: signed manifests, sessions and handshakes, eviction, canonical signing."""

from __future__ import annotations

import math
from typing import Any

import nacl.signing
import pytest

from ruflo_consensus.canonical import canonical_bytes, canonical_loads
from ruflo_consensus.federation.registry import (
    PeerRegistry,
    make_handshake_command,
    make_join_command,
    make_update_command,
)
from ruflo_consensus.federation.signing import public_key_bytes, sign_statement, verify_statement
from ruflo_consensus.statemachine import CommandError

T0 = 3_000_000_000
NONCE = bytes(range(16))


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(name.encode().ljust(32, b"\0"))


def rejected(machine: Any, command: Any, code: str) -> CommandError:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before
    return info.value


def joined(*peers: str) -> PeerRegistry:
    reg = PeerRegistry()
    for p in peers:
        reg.apply(make_join_command(key(p), p, f"wss://{p}", ["coder", "tester"], T0))
    return reg


# ---------------------------------------------------------------- canonical


def test_canonical_bytes_sorts_keys_recursively() -> None:
    a = {"b": 1, "a": {"y": [1, (2, 3)], "x": b"\x00"}}
    b = {"a": {"x": b"\x00", "y": [1, [2, 3]]}, "b": 1}
    assert canonical_bytes(a) == canonical_bytes(b)
    assert canonical_loads(canonical_bytes(a)) == {"a": {"x": b"\x00", "y": [1, [2, 3]]}, "b": 1}
    assert canonical_bytes(-0.0) == canonical_bytes(0.0)
    assert canonical_bytes({1: "x", "a": "y"}) == canonical_bytes({"a": "y", 1: "x"})
    with pytest.raises(ValueError):
        canonical_bytes({"x": math.nan})
    with pytest.raises(TypeError):
        canonical_bytes({"x": {1, 2}})


def test_signatures_cover_the_canonical_form() -> None:
    k = key("a")
    sig = sign_statement(k, {"kind": "t", "b": 1, "a": 2})
    verify_statement(public_key_bytes(k), {"a": 2, "kind": "t", "b": 1}, sig)
    for bad_key, bad_sig, statement in [
        (public_key_bytes(key("b")), sig, {"kind": "t", "b": 1, "a": 2}),
        (public_key_bytes(k), sig, {"kind": "t", "b": 1, "a": 3}),
        (public_key_bytes(k), sig[:63], {"kind": "t", "b": 1, "a": 2}),
        (public_key_bytes(k)[:31], sig, {"kind": "t", "b": 1, "a": 2}),
        (public_key_bytes(k), "not bytes", {"kind": "t", "b": 1, "a": 2}),
        (public_key_bytes(k), bytes(64), {"kind": "t", "b": 1, "a": 2}),
    ]:
        with pytest.raises(CommandError) as info:
            verify_statement(bad_key, statement, bad_sig)
        assert info.value.code == "BAD_SIGNATURE"


# -------------------------------------------------------------------- join


def test_join_verifies_the_manifest() -> None:
    reg = joined("a")
    record = reg.get("a")
    assert record is not None
    assert record.public_key == public_key_bytes(key("a"))
    assert record.endpoint == "wss://a" and record.agent_types == ("coder", "tester")
    assert record.session_status(T0) == "none" and record.last_seen == T0


def test_join_rejections() -> None:
    reg = joined("a")
    rejected(reg, make_join_command(key("a"), "a", "wss://x", ["coder"], T0), "PEER_EXISTS")
    rejected(reg, make_join_command(key("a"), "a2", "wss://x", ["coder"], T0), "PEER_EXISTS")
    tampered = make_join_command(key("b"), "b", "wss://b", ["coder"], T0)
    tampered["manifest"]["endpoint"] = "wss://evil"
    rejected(reg, tampered, "BAD_SIGNATURE")
    claimed = make_join_command(key("mallory"), "b", "wss://b", ["coder"], T0)
    claimed["manifest"]["public_key"] = public_key_bytes(key("b"))
    rejected(reg, claimed, "BAD_SIGNATURE")
    bad_mode = make_join_command(key("c"), "c", "wss://c", ["coder"], T0, compliance_modes=["x"])
    rejected(reg, bad_mode, "BAD_ARGUMENT")
    garbage = make_join_command(key("d"), "d", "wss://d", ["coder"], T0)
    garbage["signature"] = b"\x01" * 10
    rejected(reg, garbage, "BAD_SIGNATURE")
    extra = make_join_command(key("e"), "e", "wss://e", ["coder"], T0)
    extra["manifest"]["admin"] = True
    rejected(reg, extra, "BAD_ARGUMENT")
    rejected(reg, {"op": "join", "manifest": "nope", "signature": b"", "now": T0}, "BAD_ARGUMENT")


def test_update_needs_a_newer_manifest_with_the_same_key() -> None:
    reg = joined("a")
    reg.apply(make_update_command(key("a"), "a", "wss://new", ["coder"], T0 + 5))
    record = reg.get("a")
    assert record is not None and record.endpoint == "wss://new"
    assert record.agent_types == ("coder",)
    stale = make_update_command(key("a"), "a", "wss://old", ["coder"], T0 + 5)
    rejected(reg, stale, "REPLAYED")
    rotated = make_update_command(key("a2"), "a", "wss://x", ["coder"], T0 + 9)
    rejected(reg, rotated, "BAD_ARGUMENT")
    rejected(reg, make_update_command(key("z"), "z", "wss://z", [], T0 + 9), "UNKNOWN_PEER")


# --------------------------------------------------------------- sessions


def test_handshake_opens_a_session_of_one_hour_by_default() -> None:
    reg = joined("a")
    result = reg.apply(make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0 + 100))
    assert result["session"] == "active" and result["session_expires"] == T0 + 100 + 3_600_000
    record = reg.get("a")
    assert record is not None
    for t in range(T0 + 100, T0 + 3_600_100, 60_000):
        reg.apply({"op": "heartbeat", "peer": "a", "now": t})
    assert record.session_status(T0 + 3_600_099) == "active"
    assert record.session_status(T0 + 3_600_100) == "expired"


def test_session_is_overdue_after_three_missed_heartbeats() -> None:
    reg = joined("a")
    reg.apply(make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0))
    record = reg.get("a")
    assert record is not None
    assert record.session_status(T0 + 90_000) == "active"
    assert record.session_status(T0 + 90_001) == "overdue"
    rejected(reg, {"op": "heartbeat", "peer": "a", "now": T0 + 90_001}, "NO_SESSION")


def test_session_duration_is_capped_at_24_hours() -> None:
    reg = joined("a")
    long = make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0, duration_ms=86_400_001)
    rejected(reg, long, "BAD_ARGUMENT")
    ok = make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0, duration_ms=86_400_000)
    assert reg.apply(ok)["session_expires"] == T0 + 86_400_000


def test_handshake_rejections() -> None:
    reg = joined("a", "b")
    # Challenge answered more than 10 s after it was issued.
    late = make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0 + 10_001)
    rejected(reg, late, "STALE_TIMESTAMP")
    ok = make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0 + 10_000)
    reg.apply(ok)
    rejected(reg, ok, "REPLAYED")  # same nonce again
    wrong_key = make_handshake_command(key("b"), "a", "s2", bytes(16), T0, T0 + 10_000)
    rejected(reg, wrong_key, "BAD_SIGNATURE")
    moved = make_handshake_command(key("a"), "a", "s2", bytes(16), T0, T0 + 10_000)
    moved["session_id"] = "hijacked"
    rejected(reg, moved, "BAD_SIGNATURE")
    short = make_handshake_command(key("b"), "b", "s", b"123", T0, T0 + 10_000)
    rejected(reg, short, "BAD_ARGUMENT")
    rejected(reg, make_handshake_command(key("c"), "c", "s", NONCE, T0, T0), "UNKNOWN_PEER")


def test_session_end() -> None:
    reg = joined("a")
    rejected(reg, {"op": "session_end", "peer": "a", "now": T0}, "NO_SESSION")
    reg.apply(make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0))
    reg.apply({"op": "session_end", "peer": "a", "now": T0 + 1})
    record = reg.get("a")
    assert record is not None and record.session_status(T0 + 2) == "ended"


# ---------------------------------------------------------- evict/reactivate


def test_evict_and_reactivate() -> None:
    reg = joined("a")
    reg.apply(make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0))
    reg.apply({"op": "evict", "peer": "a", "reason": "abuse", "now": T0 + 1})
    record = reg.get("a")
    assert record is not None
    assert record.status == "evicted" and record.evict_reason == "abuse"
    assert not record.session_live(T0 + 2)
    rejected(reg, {"op": "evict", "peer": "a", "now": T0 + 2}, "PEER_EVICTED")
    rejected(reg, {"op": "heartbeat", "peer": "a", "now": T0 + 2}, "PEER_EVICTED")
    hs = make_handshake_command(key("a"), "a", "s2", bytes(16), T0, T0 + 2)
    rejected(reg, hs, "PEER_EVICTED")
    reg.apply({"op": "reactivate", "peer": "a", "now": T0 + 3})
    assert record.status == "active" and record.session_status(T0 + 3) == "ended"
    rejected(reg, {"op": "reactivate", "peer": "a", "now": T0 + 4}, "INVALID_TRANSITION")


def test_snapshot_roundtrip_and_bad_snapshots() -> None:
    reg = joined("a", "b")
    reg.apply(make_handshake_command(key("a"), "a", "s1", NONCE, T0, T0))
    other = PeerRegistry()
    other.restore(reg.snapshot())
    assert other.snapshot() == reg.snapshot()
    for garbage in (b"", b"\xc1", canonical_bytes({"clock": 1})):
        with pytest.raises(CommandError) as info:
            other.restore(garbage)
        assert info.value.code == "BAD_SNAPSHOT"
    assert other.snapshot() == reg.snapshot()
