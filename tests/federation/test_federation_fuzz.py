"""Fuzzing every federation machine with hostile commands and mutated snapshots.

For each machine (the six parts, the CRDT Q-table and the combined machine) the fuzzer
starts from a real, populated state and

* applies hostile commands: valid commands with fields replaced by huge integers, NaN,
  infinities, lone surrogates, wrong types, nested junk, or deleted; and random maps;
* restores mutated snapshots: a real snapshot decoded, one value deep inside replaced (or
  deleted, or duplicated), re-encoded — or, when msgpack cannot carry the value (2**70, a
  lone surrogate), handed to ``load_wire`` as a Python value.

Every outcome must be success or a typed ``CommandError``; after a rejection the snapshot
bytes are the ones from before; after a success ``snapshot()`` works, and so do the
commands that follow. Snapshots are compared as bytes, never as decoded values.

The default example counts keep the module fast; ``-m slow`` runs the long variants.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruflo_consensus.canonical import canonical_loads
from ruflo_consensus.federation import (
    AuditLog,
    BudgetLedger,
    FederationWorkload,
    MergeableQTable,
    PeerRegistry,
    ProposalBook,
    QTable,
    TrustLedger,
    make_handshake_command,
    make_join_command,
    make_proposal_command,
    make_update_command,
    make_vote_command,
    replay,
)
from ruflo_consensus.federation.signing import public_key_bytes
from ruflo_consensus.federation.trust import (
    make_add_approver_command,
    make_privileged_approval_command,
)
from ruflo_consensus.statemachine import CommandError

T0 = 6_000_000_000
MIN = 60_000

FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(FUZZ, max_examples=600)


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(name.encode().ljust(32, b"\0"))


# ------------------------------------------------------------------ the machines


@dataclass
class Subject:
    """A populated machine (as snapshot bytes), how to make an empty one, and commands."""

    new: Callable[[], Any]
    state: bytes
    templates: list[dict[str, Any]]

    def machine(self) -> Any:
        m = self.new()
        m.restore(self.state)
        return m


def _registry() -> Subject:
    reg = PeerRegistry()
    for peer in ("a", "b", "c"):
        reg.apply(make_join_command(key(peer), peer, f"wss://{peer}", ["coder"], T0))
    reg.apply(make_handshake_command(key("a"), "a", "s-a", bytes(16), T0, T0))
    reg.apply(make_handshake_command(key("c"), "c", "s-c", bytes(17), T0, T0))
    reg.apply({"op": "evict", "peer": "b", "reason": "test", "now": T0})
    t = T0 + MIN
    templates = [
        make_join_command(key("d"), "d", "wss://d", ["coder", "tester"], t),
        make_update_command(key("a"), "a", "wss://a2", ["coder"], t),
        make_handshake_command(key("a"), "a", "s-a2", bytes(range(16)), t, t),
        {"op": "heartbeat", "peer": "a", "now": t},
        {"op": "session_end", "peer": "c", "now": t},
        {"op": "evict", "peer": "a", "reason": "r", "node": "n1", "now": t},
        {"op": "reactivate", "peer": "b", "now": t},
    ]
    return Subject(PeerRegistry, reg.snapshot(), templates)


def _trust() -> Subject:
    tl = TrustLedger(approvers={"alice": public_key_bytes(key("alice"))})
    for peer in ("a", "b"):
        tl.apply({"op": "register", "peer": peer, "uptime": 0.9, "now": T0})
    tl.apply({"op": "handshake", "peer": "a", "now": T0})
    tl.apply({"op": "record", "peer": "a", "sent": 60, "received": 4, "threats": 1, "now": T0})
    tl.apply({"op": "record", "peer": "b", "integrity_failures": 1, "now": T0})
    t = T0 + MIN
    templates = [
        {"op": "register", "peer": "c", "uptime": 0.5, "now": t},
        {"op": "handshake", "peer": "b", "now": t},
        {
            "op": "record",
            "peer": "a",
            "sent": 1,
            "received": 2,
            "integrity_failures": 0,
            "threats": 1,
            "hijack": False,
            "uptime": 1.0,
            "now": t,
        },
        {"op": "reinstate", "peer": "b", "now": t},
        make_privileged_approval_command(key("alice"), "alice", "a", t),
        make_add_approver_command(key("alice"), "alice", "bob", key("bob"), t),
    ]
    return Subject(TrustLedger, tl.snapshot(), templates)


def _budget() -> Subject:
    bl = BudgetLedger()
    for peer in ("a", "b", "c"):
        bl.apply({"op": "add_peer", "peer": peer, "now": T0})
    bl.apply(
        {
            "op": "open",
            "delegation": "d",
            "origin": "a",
            "budget": {"max_hops": 4, "max_tokens": 1000, "max_usd": 5},
            "now": T0,
        }
    )
    bl.apply({"op": "hop", "delegation": "d", "peer": "a", "tokens": 10, "usd": 0.5, "now": T0})
    bl.apply({"op": "outcome", "peer": "a", "ok": False, "now": T0})
    bl.apply({"op": "suspend", "peer": "b", "now": T0})
    bl.apply({"op": "evict", "peer": "c", "now": T0})
    t = T0 + 31 * MIN
    templates = [
        {"op": "add_peer", "peer": "e", "now": t},
        {
            "op": "open",
            "delegation": "d2",
            "budget": {"max_hops": 2, "max_usd": 1.5},
            "origin": "a",
            "now": t,
        },
        {"op": "hop", "delegation": "d", "peer": "a", "tokens": 5, "usd": 0.25, "now": t},
        {"op": "close", "delegation": "d", "now": t},
        {"op": "outcome", "peer": "a", "ok": True, "now": t},
        {"op": "suspend", "peer": "a", "reason": "r", "now": t},
        {"op": "reactivate", "peer": "b", "now": t},
        {"op": "evict", "peer": "a", "now": t},
        {"op": "tick", "now": t + 2 * 1440 * MIN},
    ]
    return Subject(BudgetLedger, bl.snapshot(), templates)


def _qtable() -> Subject:
    q = QTable()
    q.apply({"op": "update", "state": "s", "action": "coder", "reward": 1.0, "now": T0})
    q.apply(
        {
            "op": "update",
            "state": "t",
            "action": 3,
            "reward": -0.5,
            "next_state": "s",
            "embedding": [0.25] * 64,
            "now": T0,
        }
    )
    templates = [
        {
            "op": "update",
            "state": "s",
            "action": "tester",
            "reward": 0.5,
            "next_state": "t",
            "embedding": [0.125] * 64,
            "now": T0 + 1,
        },
        {
            "op": "update",
            "state": "u",
            "action": 7,
            "reward": -1,
            "embedding": bytes(256),
            "now": T0 + 1,
        },
    ]
    return Subject(QTable, q.snapshot(), templates)


def _audit() -> Subject:
    log = AuditLog()
    log.apply(
        {
            "op": "append",
            "event_type": "x",
            "category": "pii",
            "latency_ms": 3.5,
            "pii_types": ["email"],
            "metadata": {"k": [1, 2.5, b"\x00"]},
            "now": T0,
        }
    )
    log.apply(
        {
            "op": "append",
            "event_type": "y",
            "category": "security",
            "severity": "warn",
            "content": "raw",
            "size_bytes": 10,
            "node": "n1",
            "now": T0,
        }
    )
    t = T0 + 91 * 1440 * MIN
    templates = [
        {
            "op": "append",
            "event_type": "z",
            "category": "message",
            "severity": "error",
            "session": "s",
            "source": "a",
            "target": "b",
            "agent": "coder",
            "trust_level": "ATTESTED",
            "pii_found": True,
            "pii_types": ["ssn"],
            "pii_action": "block",
            "threat_found": True,
            "threat_types": ["t"],
            "latency_ms": 1,
            "size_bytes": 2,
            "compliance_mode": "hipaa",
            "data_residency": "eu",
            "content": "c",
            "metadata": {"original": "v"},
            "now": t,
        },
        {"op": "prune", "now": t},
    ]
    return Subject(AuditLog, log.snapshot(), templates)


def _proposals() -> Subject:
    book = ProposalBook()
    for i, voter in enumerate(("v1", "v2", "v3")):
        book.apply(
            {
                "op": "set_voter",
                "peer": voter,
                "public_key": public_key_bytes(key(voter)),
                "level": 2 + i % 2,
                "now": T0,
            }
        )
    book.apply(make_proposal_command("p", "trust-change", {"x": [1, 2.5]}, T0, proposer="v1"))
    book.apply(make_vote_command(key("v1"), "p", True, T0, voter="v1"))
    t = T0 + 1000
    templates = [
        {
            "op": "set_voter",
            "peer": "v4",
            "public_key": public_key_bytes(key("v4")),
            "level": 3,
            "state": "SUSPENDED",
            "now": t,
        },
        {"op": "remove_voter", "peer": "v3", "now": t},
        make_proposal_command(
            "q",
            "agent-spawn",
            [None, True, "s"],
            t,
            quorum_fraction=[3, 4],
            ttl_ms=5000,
            proposer="v2",
        ),
        make_vote_command(key("v2"), "p", False, t, voter="v2"),
        make_vote_command(key("v1"), "p", False, t, voter="v1"),
        {"op": "tick", "now": t + MIN},
    ]
    return Subject(ProposalBook, book.snapshot(), templates)


def _mergeable() -> Subject:
    m, other = MergeableQTable(), MergeableQTable()
    m.apply({"op": "update", "node": "A", "state": "s", "action": 0, "reward": 0.5})
    other.apply({"op": "update", "node": "B", "state": "s", "action": 1, "reward": -1})
    templates = [
        {
            "op": "update",
            "node": "A",
            "state": "t",
            "action": "coder",
            "reward": 1.0,
            "next_state": "s",
            "now": T0,
        },
        {"op": "merge", "state": other.snapshot()},
    ]
    return Subject(MergeableQTable, m.snapshot(), templates)


def _federation() -> Subject:
    workload = FederationWorkload(seed=11, peers=4, invalid_ratio=0.0)
    fed, _ = replay(workload.take(160), workload.new_machine())
    templates = workload.take(40)
    return Subject(workload.new_machine, fed.snapshot(), templates)


BUILDERS: dict[str, Callable[[], Subject]] = {
    "registry": _registry,
    "trust": _trust,
    "budget": _budget,
    "qtable": _qtable,
    "audit": _audit,
    "proposals": _proposals,
    "mergeable": _mergeable,
    "federation": _federation,
}


@cache
def subject(name: str) -> Subject:
    return BUILDERS[name]()


# ------------------------------------------------------------ hostile values

SURROGATES = ["\ud800", "\udfff", "a\udc80b"]
FIELD_NAMES = [
    "op",
    "now",
    "node",
    "peer",
    "delegation",
    "budget",
    "max_hops",
    "max_tokens",
    "max_usd",
    "tokens",
    "usd",
    "uptime",
    "reward",
    "latency_ms",
    "size_bytes",
    "state",
    "action",
    "embedding",
    "pii_types",
    "threat_types",
    "metadata",
    "payload",
    "quorum_fraction",
    "ttl_ms",
    "signature",
    "public_key",
    "manifest",
    "nonce",
    "session_id",
    "reason",
]

NASTY: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**53 + 1,
    2**62,
    2**63,
    2**64,
    2**70,
    -(2**63) - 1,
    2**1100,
    -(2**1100),
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    1e308,
    "",
    "x" * 300,
    *SURROGATES,
    b"",
    bytes(1),
    bytes(16),
    bytes(32),
    bytes(64),
    [],
    {},
    [float("nan")],
    ["\ud800"],
    {"k": "\ud800"},
    {"\ud800": 1},
    [2**70],
]
"""The values that broke the machines: past msgpack or the float range, NaN, infinities,
lone surrogates, integers where bytes belong, empty and wrong containers."""

KILLERS: list[Any] = ["\ud800", 2**1100, -(2**1100), float("nan"), float("inf"), 2**70, -1, None]
"""The few values behind almost every bug found: each is tried in every field by the sweeps."""

nasty = st.sampled_from(NASTY).map(copy.deepcopy)  # mutations must not reach the constants
scalars = st.one_of(
    st.sampled_from(KILLERS),
    st.sampled_from(KILLERS),
    nasty,
    nasty,
    st.sampled_from(["a", "b", "d", "p", "s", "v1", "peer-0", "coder"]),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.builds(
        lambda a, s, b: a + s + b,
        st.text(max_size=3),
        st.sampled_from(SURROGATES),
        st.text(max_size=3),
    ),
    st.binary(max_size=70),
)
hostile = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a nested value (maps and lists), the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k in value:
            out.extend(paths(value[k], (*prefix, k)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(paths(item, (*prefix, i)))
    return out


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw: st.DrawFn, value: Any, keep: tuple[str, ...] = ()) -> Any:
    """``value`` with one to three positions replaced, deleted or duplicated.

    Top-level keys in ``keep`` are left alone (a command's ``op`` and ``now``: changing them
    only ever meets the first check).
    """
    value = copy.deepcopy(value)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        every = [p for p in paths(value) if not (p and p[0] in keep)]
        leaves = [p for p in every if not isinstance(_at(value, p), (dict, list))]
        path = draw(st.sampled_from(leaves if leaves and draw(st.integers(0, 4)) else every))
        if not path:
            if draw(st.integers(0, 9)) == 0:
                value = draw(hostile)
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        how = draw(st.sampled_from(["replace"] * 6 + ["delete", "duplicate"]))
        if how == "replace":
            parent[last] = draw(scalars if draw(st.integers(0, 3)) else hostile)
        elif how == "delete":
            del parent[last]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[draw(st.sampled_from(FIELD_NAMES))] = copy.deepcopy(parent[last])
    return value


@st.composite
def hostile_command(draw: st.DrawFn, templates: list[dict[str, Any]]) -> Any:
    """A valid command with some fields made hostile, or a random map, or not a map at all."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(hostile)
    if kind == 1:
        cmd = draw(st.dictionaries(st.sampled_from(FIELD_NAMES), hostile, max_size=6))
        cmd["op"] = draw(st.sampled_from([t["op"] for t in templates]))
        return cmd
    return draw(mutated(draw(st.sampled_from(templates)), keep=("op", "now")))


# ------------------------------------------------------------------- checking


def apply_checked(machine: Any, command: Any) -> bool:
    """Apply ``command``: success, or a typed rejection that changed no byte of the state."""
    before = machine.snapshot()
    try:
        machine.apply(command)
    except CommandError as exc:
        exc.message.encode()  # a rejection crosses the wire too
        assert machine.snapshot() == before, f"rejected ({exc.code}) but changed the state"
        return False
    machine.snapshot()
    return True


def pack(value: Any) -> bytes | None:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None  # 2**70, a lone surrogate, ...: only the Python API can carry it
    return data


def restore_checked(machine: Any, value: Any, data: bytes | None) -> bool:
    """Restore bytes (or load a Python value): success, or BAD_SNAPSHOT and no change."""
    before = machine.snapshot()
    try:
        if data is not None:
            machine.restore(data)
        else:
            machine.load_wire(value)
    except CommandError as exc:
        assert exc.code == "BAD_SNAPSHOT", exc
        exc.message.encode()
        assert machine.snapshot() == before, "a refused snapshot changed the state"
        return False
    machine.snapshot()
    return True


def run_commands(name: str, data: st.DataObject) -> None:
    s = subject(name)
    machine = s.machine()
    for command in data.draw(st.lists(hostile_command(s.templates), min_size=1, max_size=4)):
        apply_checked(machine, command)


def run_snapshots(name: str, data: st.DataObject) -> None:
    s = subject(name)
    machine = s.new()  # the target holds a different (empty) state, so a change shows
    value = data.draw(mutated(canonical_loads(s.state)))
    packed = pack(value)
    if packed is not None and data.draw(st.booleans()):
        packed = None  # the Python-API path for a value msgpack could carry as well
    if restore_checked(machine, value, packed):
        # A restored state must also survive the commands that come after it.
        for command in data.draw(st.lists(st.sampled_from(s.templates), max_size=3)):
            apply_checked(machine, copy.deepcopy(command))
    if name == "mergeable" and packed is not None:
        apply_checked(s.machine(), {"op": "merge", "state": packed})


MACHINES = sorted(BUILDERS)


def leaf_paths(value: Any, max_depth: int | None = None) -> list[tuple[Any, ...]]:
    every = paths(value)
    if max_depth is not None:
        every = [p for p in every if len(p) <= max_depth]
    return [
        p
        for p in every
        if p and (max_depth == len(p) or not isinstance(_at(value, p), (dict, list)))
    ]


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    _at(out, path[:-1])[path[-1]] = new
    return out


@pytest.mark.parametrize("name", MACHINES)
def test_every_field_of_every_command_with_each_killer_value(name: str) -> None:
    """Deterministic sweep: one field of one command replaced by one killer value."""
    s = subject(name)
    machine = s.machine()
    templates = {t["op"]: t for t in s.templates}.values() if name == "federation" else s.templates
    for template in templates:
        for path in leaf_paths(template):
            for killer in KILLERS:
                if apply_checked(machine, replaced(template, path, killer)):
                    machine = s.machine()  # accepted: start the next case from the same state


@pytest.mark.parametrize("name", MACHINES)
def test_every_field_of_a_snapshot_with_each_killer_value(name: str) -> None:
    """Deterministic sweep: one value of a real snapshot replaced by one killer value.

    The combined machine's parts are read by the parts' own readers (swept above), so for it
    the sweep covers its own fields and each part as a whole.
    """
    s = subject(name)
    value = canonical_loads(s.state)
    for path in leaf_paths(value, max_depth=2 if name == "federation" else None):
        for killer in [*KILLERS, 2**62, [], {}, "x", b"\x00"]:
            bad = replaced(value, path, killer)
            machine = s.new()
            if restore_checked(machine, bad, pack(bad)):
                for command in s.templates[:10]:
                    apply_checked(machine, copy.deepcopy(command))


def test_every_template_is_accepted_or_typed() -> None:
    for name in MACHINES:
        s = subject(name)
        machine = s.machine()
        accepted = [apply_checked(machine, copy.deepcopy(cmd)) for cmd in s.templates]
        assert any(accepted), name  # the templates reach deep, not just the first check


@pytest.mark.parametrize("name", MACHINES)
@FUZZ
@given(data=st.data())
def test_hostile_commands(name: str, data: st.DataObject) -> None:
    run_commands(name, data)


@pytest.mark.parametrize("name", MACHINES)
@FUZZ
@given(data=st.data())
def test_mutated_snapshots(name: str, data: st.DataObject) -> None:
    run_snapshots(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", MACHINES)
@LONG
@given(data=st.data())
def test_hostile_commands_long(name: str, data: st.DataObject) -> None:
    run_commands(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", MACHINES)
@LONG
@given(data=st.data())
def test_mutated_snapshots_long(name: str, data: st.DataObject) -> None:
    run_snapshots(name, data)
