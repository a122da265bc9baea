"""Hostile snapshots and Python-API commands: typed rejections that change nothing.

Each test reproduces one case the fuzzer found (see the restructure issue): a restore or a
command that raised an untyped exception, half-applied, or let in a value that later made
``snapshot()`` raise. Every rejection must be a typed ``CommandError`` and leave the
machine's snapshot byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import nacl.signing
import pytest

from ruflo_consensus.canonical import canonical_loads
from ruflo_consensus.federation import (
    AuditLog,
    BudgetLedger,
    FederationStateMachine,
    MergeableQTable,
    PeerRegistry,
    ProposalBook,
    QTable,
    TrustLedger,
    make_handshake_command,
    make_join_command,
)
from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.statemachine import CommandError

T0 = 6_000_000_000
MIN = 60_000
HUGE = 2**1100  # past 2**64 and past the float range
SURROGATE = "\ud800"


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(name.encode().ljust(32, b"\0"))


def pack(value: Any) -> bytes:
    """Plain msgpack (unlike canonical_bytes it carries NaN), as a hostile peer would send."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def mutated(snapshot: bytes, path: tuple[Any, ...], new: Any) -> bytes:
    value = canonical_loads(snapshot)
    target = value
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return pack(value)


def bad_snapshot(machine: Any, data: bytes) -> None:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.restore(data)
    assert info.value.code == "BAD_SNAPSHOT", info.value
    assert machine.snapshot() == before


def rejected(machine: Any, command: Any, code: str) -> None:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before


# ------------------------------------------------------------- populated machines


def federation() -> FederationStateMachine:
    fed = FederationStateMachine()
    for i, peer in enumerate(("a", "b")):
        fed.apply(make_join_command(key(peer), peer, f"wss://{peer}", ["coder"], T0))
        nonce = bytes([i]) * 16
        fed.apply(make_handshake_command(key(peer), peer, f"s-{peer}", nonce, T0, T0))
    fed.apply({"op": "budget.open", "delegation": "d", "budget": {"max_usd": 10}, "now": T0})
    fed.apply({"op": "budget.suspend", "peer": "b", "now": T0})
    fed.apply({"op": "audit.append", "event_type": "x", "category": "pii", "now": T0})
    return fed


def registry() -> PeerRegistry:
    reg = PeerRegistry()
    reg.apply(make_join_command(key("a"), "a", "wss://a", ["coder"], T0))
    reg.apply(make_handshake_command(key("a"), "a", "s", bytes(16), T0, T0))
    reg.apply({"op": "evict", "peer": "a", "now": T0})
    return reg


def trust() -> TrustLedger:
    tl = TrustLedger(approvers={"alice": public_key_bytes(key("alice"))})
    tl.apply({"op": "register", "peer": "a", "now": T0})
    tl.apply({"op": "record", "peer": "a", "sent": 3, "threats": 1, "now": T0})
    return tl


def budget() -> BudgetLedger:
    bl = BudgetLedger()
    bl.apply({"op": "add_peer", "peer": "a", "now": T0})
    bl.apply({"op": "open", "delegation": "d", "budget": {"max_tokens": 100}, "now": T0})
    bl.apply({"op": "hop", "delegation": "d", "peer": "a", "tokens": 5, "usd": 1, "now": T0})
    bl.apply({"op": "outcome", "peer": "a", "ok": False, "now": T0})
    return bl


def qtable() -> QTable:
    q = QTable()
    q.apply({"op": "update", "state": "s", "action": 0, "reward": 1.0, "now": T0})
    q.apply(
        {
            "op": "update",
            "state": "t",
            "action": 1,
            "reward": -1,
            "embedding": [0.5] * 64,
            "now": T0,
        }
    )
    return q


def audit() -> AuditLog:
    log = AuditLog()
    log.apply(
        {
            "op": "append",
            "event_type": "x",
            "category": "pii",
            "latency_ms": 3.5,
            "pii_types": ["email"],
            "now": T0,
        }
    )
    return log


def proposals() -> ProposalBook:
    book = ProposalBook()
    book.apply(
        {
            "op": "set_voter",
            "peer": "v",
            "public_key": public_key_bytes(key("v")),
            "level": 2,
            "now": T0,
        }
    )
    book.apply(
        {
            "op": "create",
            "proposal_id": "p",
            "message_type": "trust-change",
            "payload": {"x": [1.5, "y"]},
            "now": T0,
        }
    )
    return book


def mergeable() -> MergeableQTable:
    m = MergeableQTable()
    m.apply({"op": "update", "node": "A", "state": "s", "action": 0, "reward": 0.5})
    return m


PARTS: dict[str, Callable[[], Any]] = {
    "registry": registry,
    "trust": trust,
    "budget": budget,
    "qtable": qtable,
    "audit": audit,
    "proposals": proposals,
}


# ------------------------------------------------ restore: validate, then swap


@pytest.mark.parametrize("part", ["registry", "budget", "trust", "proposals", "audit"])
def test_federation_restore_with_inf_in_a_part_clock_changes_nothing(part: str) -> None:
    # registry.clock = inf raised OverflowError and left the machine empty; budget.clock =
    # inf left it half-loaded.
    fed = federation()
    bad_snapshot(fed, mutated(fed.snapshot(), (part, "clock"), float("inf")))
    assert len(fed.registry.peers) == 2 and fed.audit.records


def test_federation_restore_with_a_part_of_the_wrong_shape_changes_nothing() -> None:
    fed = federation()
    bad_snapshot(fed, mutated(fed.snapshot(), ("qtable", "keys"), {"not": "a list"}))
    bad_snapshot(fed, mutated(fed.snapshot(), ("version",), True))


@pytest.mark.parametrize("part", sorted(PARTS))
def test_part_restore_with_inf_clock_is_bad_snapshot(part: str) -> None:
    # load_wire raised an untyped OverflowError (int(inf)).
    machine = PARTS[part]()
    bad_snapshot(machine, mutated(machine.snapshot(), ("clock",), float("inf")))


def test_proposal_fraction_with_zero_denominator_is_bad_snapshot() -> None:
    # Fraction(n, 0) raised an untyped ZeroDivisionError.
    book = proposals()
    bad_snapshot(book, mutated(book.snapshot(), ("proposals", 0, 5), 0))


BYTES_FIELDS: list[tuple[str, tuple[Any, ...]]] = [
    ("trust", ("approvers", 0, 1)),
    ("registry", ("peers", 0, 1, 1)),  # signature
    ("registry", ("peers", 0, 1, 11, 0, 1)),  # a remembered nonce
    ("audit", ("anchor_hash",)),
    ("proposals", ("roster", 0, 1)),
]


@pytest.mark.parametrize("size", [1_000_000, 2**62])
@pytest.mark.parametrize(("part", "path"), BYTES_FIELDS)
def test_integer_in_a_bytes_field_is_bad_snapshot(
    part: str, path: tuple[Any, ...], size: int
) -> None:
    # bytes(n) allocated n bytes: a 1 MB key from a tiny snapshot, MemoryError for 2**62.
    machine = PARTS[part]()
    bad_snapshot(machine, mutated(machine.snapshot(), path, size))


def test_a_38_byte_snapshot_cannot_restore_a_megabyte_key() -> None:
    data = pack({"clock": 0, "approvers": [["a", 1_000_000]], "peers": []})
    assert len(data) < 40
    bad_snapshot(TrustLedger(), data)


BREAKS_SNAPSHOT: list[tuple[str, tuple[Any, ...], Any]] = [
    ("trust", ("peers", 0, 1, 1), float("nan")),  # score
    ("trust", ("peers", 0, 1, 7), float("nan")),  # uptime
    ("trust", ("peers", 0, 1, 9), float("nan")),  # dropped_at
    ("registry", ("peers", 0, 1, 5), float("nan")),  # evicted_at
    ("registry", ("peers", 0, 1, 8), float("nan")),  # session_id
    ("budget", ("delegations", 0, 1, 0, 1), float("nan")),  # max_tokens
    ("budget", ("delegations", 0, 1, 1), float("nan")),  # origin
    ("budget", ("breakers", 0, 1, 2), float("nan")),  # suspended_at
    ("audit", ("records", 0, 17), float("nan")),  # latency_ms
    ("audit", ("records", 0, 22), {"k": float("nan")}),  # metadata
    ("proposals", ("proposals", 0, 2), [float("nan")]),  # payload
    ("proposals", ("proposals", 0, 12), float("nan")),  # decided_at
]


@pytest.mark.parametrize(("part", "path", "new"), BREAKS_SNAPSHOT)
def test_mutated_snapshot_that_would_break_snapshot_is_refused(
    part: str, path: tuple[Any, ...], new: Any
) -> None:
    # These restored, and then snapshot() raised (NaN has no canonical encoding).
    machine = PARTS[part]()
    bad_snapshot(machine, mutated(machine.snapshot(), path, new))
    machine.snapshot()


def test_mergeable_snapshot_with_nan_sums_is_refused() -> None:
    m = mergeable()
    bad_snapshot(m, mutated(m.snapshot(), ("entries", 0, 1, 0, 2, 0), float("nan")))
    rejected(
        m,
        {"op": "merge", "state": mutated(m.snapshot(), ("entries", 0, 1, 0, 2, 0), float("nan"))},
        "BAD_SNAPSHOT",
    )


def test_registry_snapshot_whose_peer_id_and_manifest_disagree_is_refused() -> None:
    # It restored, and a later evict of that peer raised KeyError inside the commit.
    reg = registry()
    bad_snapshot(reg, mutated(reg.snapshot(), ("peers", 0, 0), "someone-else"))


def test_suspended_breaker_without_a_suspension_time_is_refused() -> None:
    # It restored, and reactivate then failed an assertion in the plan step.
    bl = budget()
    bl.apply({"op": "suspend", "peer": "a", "now": T0})
    bad_snapshot(bl, mutated(bl.snapshot(), ("breakers", 0, 1, 2), None))


def test_federation_snapshot_whose_parts_disagree_on_peers_is_refused() -> None:
    # It restored, and federation.send then raised KeyError looking up the breaker.
    fed = federation()
    bad_snapshot(fed, mutated(fed.snapshot(), ("budget", "breakers"), []))


# ------------------------------------------------------- commands: plan rejects all


HUGE_FIELDS: list[tuple[Callable[[], Any], dict[str, Any], str]] = [
    (TrustLedger, {"op": "register", "peer": "a", "uptime": HUGE}, "BAD_ARGUMENT"),
    (trust, {"op": "record", "peer": "a", "uptime": HUGE}, "BAD_ARGUMENT"),
    (budget, {"op": "hop", "delegation": "d", "peer": "a", "tokens": HUGE}, "BAD_ARGUMENT"),
    (budget, {"op": "hop", "delegation": "d", "peer": "a", "usd": HUGE}, "BAD_ARGUMENT"),
    (budget, {"op": "hop", "delegation": "d", "peer": "a", "usd": -HUGE}, "BAD_ARGUMENT"),
    (budget, {"op": "open", "delegation": "e", "budget": {"max_usd": HUGE}}, "INVALID_BUDGET"),
    (QTable, {"op": "update", "state": "s", "action": 0, "reward": HUGE}, "BAD_ARGUMENT"),
    (
        QTable,
        {"op": "update", "state": "s", "action": 0, "reward": 0, "embedding": [HUGE] * 64},
        "BAD_ARGUMENT",
    ),
    (
        AuditLog,
        {"op": "append", "event_type": "x", "category": "pii", "latency_ms": HUGE},
        "BAD_ARGUMENT",
    ),
    (
        federation,
        {"op": "federation.send", "peer": "a", "delegation": "d", "usd": HUGE},
        "BAD_ARGUMENT",
    ),
    (
        federation,
        {"op": "qtable.update", "state": "s", "action": 0, "reward": -HUGE},
        "BAD_ARGUMENT",
    ),
]


@pytest.mark.parametrize(("make", "command", "code"), HUGE_FIELDS)
def test_integers_past_the_float_range_are_typed_rejections(
    make: Callable[[], Any], command: dict[str, Any], code: str
) -> None:
    # float(2**1100) raised an untyped OverflowError.
    rejected(make(), {**command, "now": T0}, code)


SURROGATE_FIELDS: list[tuple[Callable[[], Any], dict[str, Any]]] = [
    (TrustLedger, {"op": "register", "peer": SURROGATE}),
    (BudgetLedger, {"op": "add_peer", "peer": SURROGATE}),
    (budget, {"op": "open", "delegation": "e", "origin": SURROGATE}),
    (budget, {"op": "suspend", "peer": "a", "reason": SURROGATE}),
    (QTable, {"op": "update", "state": SURROGATE, "action": 0, "reward": 0}),
    (AuditLog, {"op": "append", "event_type": SURROGATE, "category": "pii"}),
    (AuditLog, {"op": "append", "event_type": "x", "category": "pii", "content": SURROGATE}),
    (AuditLog, {"op": "append", "event_type": "x", "category": "pii", "node": SURROGATE}),
    (proposals, {"op": "create", "proposal_id": SURROGATE, "message_type": "trust-change"}),
    (
        proposals,
        {"op": "create", "proposal_id": "q", "message_type": "trust-change", "proposer": SURROGATE},
    ),
    (registry, {"op": "reactivate", "peer": "a", "node": SURROGATE}),
    (federation, {"op": "budget.open", "delegation": SURROGATE}),
    (federation, {"op": "registry.evict", "peer": "a", "reason": SURROGATE}),
]


@pytest.mark.parametrize(("make", "command"), SURROGATE_FIELDS)
def test_lone_surrogates_are_rejected_before_they_reach_state(
    make: Callable[[], Any], command: dict[str, Any]
) -> None:
    # '\ud800' was accepted into state, and snapshot() then raised UnicodeEncodeError.
    machine = make()
    rejected(machine, {**command, "now": T0}, "BAD_ARGUMENT")
    machine.snapshot()


@pytest.mark.parametrize(
    "command",
    [
        {"op": "federation.send", "peer": "a"},
        {"op": "registry.evict", "peer": "a"},
        {"op": "registry.reactivate", "peer": "b", "now": T0 + 31 * MIN},
    ],
)
def test_federation_command_with_a_surrogate_node_changes_nothing(command: dict[str, Any]) -> None:
    # These raised inside the commit step, after the registry/breaker/trust parts committed.
    fed = federation()
    rejected(fed, {"now": T0, **command, "node": SURROGATE}, "BAD_ARGUMENT")
    fed.apply({"now": T0, **command, "node": "n1"})  # the same command is otherwise fine


def test_error_messages_are_encodable_text() -> None:
    reg = registry()
    with pytest.raises(CommandError) as info:
        reg.apply({"op": "heartbeat", "peer": "a", SURROGATE: 1, "now": T0})
    assert info.value.code == "BAD_ARGUMENT"
    info.value.message.encode()


def test_proposal_fraction_that_does_not_reduce_is_refused() -> None:
    # [2**70 + 1, 2**70 + 2] was accepted; its terms do not fit msgpack, so snapshot() raised.
    book = proposals()
    rejected(
        book,
        {
            "op": "create",
            "proposal_id": "q",
            "message_type": "trust-change",
            "quorum_fraction": [2**70 + 1, 2**70 + 2],
            "now": T0,
        },
        "BAD_ARGUMENT",
    )


# ------------------------------------------------------------------ minor cases


@pytest.mark.parametrize("now", ["x", -1, 2**70, float("inf"), True, 1.5])
def test_mergeable_qtable_validates_now(now: Any) -> None:
    m = mergeable()
    cmd = {"op": "update", "node": "A", "state": "s", "action": 0, "reward": 0.5, "now": now}
    rejected(m, cmd, "BAD_ARGUMENT")
    m.apply({**cmd, "now": T0})


@pytest.mark.parametrize("pii_types", [0, "", False, {}])
def test_audit_pii_types_that_are_not_a_list_are_refused(pii_types: Any) -> None:
    cmd = {"op": "append", "event_type": "x", "category": "pii", "now": T0}
    rejected(audit(), {**cmd, "pii_types": pii_types}, "BAD_ARGUMENT")
    rejected(audit(), {**cmd, "threat_types": pii_types}, "BAD_ARGUMENT")
    audit().apply({**cmd, "pii_types": []})
