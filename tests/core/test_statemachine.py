"""Tests of the reference state machines and the exactly-once SessionTable."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.statemachine import (
    CommandError,
    CommandRejected,
    KVStateMachine,
    RegisterStateMachine,
    SessionTable,
    StateMachine,
    decode_result,
    encode_result,
    pack,
)


def kv(op: str, key: str, **fields: str) -> dict[str, Any]:
    return {"op": op, "key": key, **fields}


def populated_kv() -> KVStateMachine:
    m = KVStateMachine()
    m.apply(kv("put", "k", value="v"))
    m.apply(kv("put", "other", value="ö-unicode ✓"))
    m.apply(kv("put", "empty", value=""))
    return m


def populated_register() -> RegisterStateMachine:
    m = RegisterStateMachine()
    m.apply({"op": "write", "value": {"a": [1, b"\x00", None]}})
    return m


# --------------------------------------------------------------------------- KV semantics


def test_kv_get_of_never_written_key_is_empty_string() -> None:
    m = KVStateMachine()
    assert m.apply(kv("get", "nope")) == ""
    assert m.apply(kv("get", "")) == ""
    # A read does not create the key.
    assert m.snapshot() == KVStateMachine().snapshot()


def test_kv_put_get_and_overwrite() -> None:
    m = KVStateMachine()
    assert m.apply(kv("put", "a", value="1")) is None
    assert m.apply(kv("get", "a")) == "1"
    assert m.apply(kv("put", "a", value="2")) is None
    assert m.apply(kv("get", "a")) == "2"
    assert m.apply(kv("get", "b")) == ""
    assert m.apply(kv("put", "a", value="")) is None
    assert m.apply(kv("get", "a")) == ""


def test_kv_append_concatenates_and_starts_from_empty() -> None:
    m = KVStateMachine()
    assert m.apply(kv("append", "a", value="x")) is None
    assert m.apply(kv("get", "a")) == "x"
    assert m.apply(kv("append", "a", value="yz")) is None
    assert m.apply(kv("append", "a", value="")) is None
    assert m.apply(kv("get", "a")) == "xyz"
    m.apply(kv("put", "a", value="new"))
    m.apply(kv("append", "a", value="+"))
    assert m.apply(kv("get", "a")) == "new+"


def test_kv_cas_swaps_only_on_match() -> None:
    m = KVStateMachine()
    m.apply(kv("put", "a", value="1"))
    assert m.apply(kv("cas", "a", old="2", new="3")) is False
    assert m.apply(kv("get", "a")) == "1"
    assert m.apply(kv("cas", "a", old="1", new="3")) is True
    assert m.apply(kv("get", "a")) == "3"
    assert m.apply(kv("cas", "a", old="1", new="4")) is False
    assert m.apply(kv("get", "a")) == "3"


def test_kv_cas_on_never_written_key_compares_to_empty_string() -> None:
    m = KVStateMachine()
    empty = m.snapshot()
    assert m.apply(kv("cas", "a", old="x", new="y")) is False
    assert m.snapshot() == empty  # a failed cas does not create the key
    assert m.apply(kv("cas", "a", old="", new="y")) is True
    assert m.apply(kv("get", "a")) == "y"


def test_kv_keys_are_independent() -> None:
    m = KVStateMachine()
    m.apply(kv("put", "a", value="1"))
    m.apply(kv("append", "b", value="2"))
    m.apply(kv("cas", "c", old="", new="3"))
    assert [m.apply(kv("get", k)) for k in "abcd"] == ["1", "2", "3", ""]


KV_MALFORMED: list[tuple[Any, str]] = [
    (None, "BAD_COMMAND"),
    ("get", "BAD_COMMAND"),
    (["op", "get"], "BAD_COMMAND"),
    (5, "BAD_COMMAND"),
    (b"put", "BAD_COMMAND"),
    ({}, "BAD_COMMAND"),
    ({"key": "k", "value": "v"}, "BAD_COMMAND"),
    ({"op": None, "key": "k"}, "BAD_COMMAND"),
    ({"op": 1, "key": "k"}, "BAD_COMMAND"),
    ({"op": b"put", "key": "k", "value": "v"}, "BAD_COMMAND"),
    ({"op": ["put"], "key": "k", "value": "v"}, "BAD_COMMAND"),
    ({"op": "delete", "key": "k"}, "UNKNOWN_OP"),
    ({"op": "PUT", "key": "k", "value": "x"}, "UNKNOWN_OP"),
    ({"op": "", "key": "k"}, "UNKNOWN_OP"),
    ({"op": "read", "key": "k"}, "UNKNOWN_OP"),
    ({"op": "get"}, "BAD_ARGUMENT"),
    ({"op": "get", "key": 1}, "BAD_ARGUMENT"),
    ({"op": "get", "key": b"k"}, "BAD_ARGUMENT"),
    ({"op": "put", "key": None, "value": "x"}, "BAD_ARGUMENT"),
    ({"op": "put", "value": "x"}, "BAD_ARGUMENT"),
    ({"op": "put", "key": ["k"], "value": "x"}, "BAD_ARGUMENT"),
    ({"op": "put", "key": "k"}, "BAD_ARGUMENT"),
    ({"op": "put", "key": "k", "value": 1}, "BAD_ARGUMENT"),
    ({"op": "put", "key": "k", "value": None}, "BAD_ARGUMENT"),
    ({"op": "put", "key": "k", "value": b"x"}, "BAD_ARGUMENT"),
    ({"op": "put", "key": "new", "value": True}, "BAD_ARGUMENT"),
    ({"op": "append", "key": "k"}, "BAD_ARGUMENT"),
    ({"op": "append", "key": "k", "value": 1}, "BAD_ARGUMENT"),
    ({"op": "append", "key": "new", "value": None}, "BAD_ARGUMENT"),
    ({"op": "append", "key": 2, "value": "x"}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": "k", "new": "x"}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": "k", "old": "v"}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": "k", "old": "v", "new": 1}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": "k", "old": "v", "new": None}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": "k", "old": None, "new": "x"}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": "new", "old": "", "new": 0}, "BAD_ARGUMENT"),
    ({"op": "cas", "key": None, "old": "v", "new": "x"}, "BAD_ARGUMENT"),
]


@pytest.mark.parametrize(("command", "code"), KV_MALFORMED, ids=lambda v: f"{v!r:.50}")
def test_kv_malformed_command_raises_and_changes_nothing(command: Any, code: str) -> None:
    m = populated_kv()
    before_snapshot = m.snapshot()
    before_data = dict(m.data)
    with pytest.raises(CommandError) as info:
        m.apply(command)
    assert info.value.code == code
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{code}: ")
    assert info.value.message
    assert m.snapshot() == before_snapshot
    assert m.data == before_data


# --------------------------------------------------------------------------- KV snapshots

kv_keys = st.text(max_size=6)
kv_values = st.text(max_size=6)
kv_commands = st.one_of(
    st.builds(lambda k: kv("get", k), kv_keys),
    st.builds(lambda k, v: kv("put", k, value=v), kv_keys, kv_values),
    st.builds(lambda k, v: kv("append", k, value=v), kv_keys, kv_values),
    st.builds(lambda k, o, n: kv("cas", k, old=o, new=n), kv_keys, kv_values, kv_values),
)


def test_kv_snapshot_restore_round_trip() -> None:
    m = populated_kv()
    snap = m.snapshot()
    r = KVStateMachine()
    r.apply(kv("put", "stale", value="must disappear"))
    assert r.restore(snap) is None
    assert r.snapshot() == snap
    assert r.data == m.data
    assert r.apply(kv("get", "stale")) == ""
    assert r.apply(kv("get", "other")) == "ö-unicode ✓"
    # The restored machine continues exactly like the original.
    for cmd in [kv("append", "k", value="2"), kv("cas", "k", old="v2", new="w"), kv("get", "k")]:
        assert r.apply(cmd) == m.apply(cmd)
    assert r.snapshot() == m.snapshot()


def test_kv_empty_snapshot_restore_clears_state() -> None:
    m = populated_kv()
    m.restore(KVStateMachine().snapshot())
    assert m.data == {}
    assert m.apply(kv("get", "k")) == ""


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(kv_keys, kv_values, max_size=12), st.randoms(use_true_random=False))
def test_kv_equal_states_give_equal_snapshots_regardless_of_order(
    state: dict[str, str], rnd: random.Random
) -> None:
    items = list(state.items())
    a, b = KVStateMachine(), KVStateMachine()
    for k, v in items:
        a.apply(kv("put", k, value=v))
    rnd.shuffle(items)
    for k, v in items:
        b.apply(kv("append", k, value=v))
    assert a.snapshot() == b.snapshot()
    c = KVStateMachine()
    c.restore(a.snapshot())
    assert c.data == state
    assert c.snapshot() == a.snapshot()


@settings(max_examples=100, deadline=None)
@given(st.lists(kv_commands, max_size=20))
def test_kv_restore_reproduces_any_reachable_state(cmds: list[dict[str, Any]]) -> None:
    m = KVStateMachine()
    for cmd in cmds:
        m.apply(cmd)
    r = KVStateMachine()
    r.restore(m.snapshot())
    assert r.data == m.data
    assert r.snapshot() == m.snapshot()


def test_kv_different_states_give_different_snapshots() -> None:
    a, b = KVStateMachine(), KVStateMachine()
    a.apply(kv("put", "k", value="1"))
    b.apply(kv("put", "k", value="2"))
    assert a.snapshot() != b.snapshot()
    b.apply(kv("put", "k", value="1"))
    assert a.snapshot() == b.snapshot()


KV_WRONG_SHAPE = [
    pack("x"),
    pack(None),
    pack(5),
    pack({"k": "v"}),
    pack([["k"]]),
    pack([["k", "v", "w"]]),
    pack([["k", 1]]),
    pack([[1, "v"]]),
    pack([["k", None]]),
    pack([["k", b"v"]]),
    pack([("k", "v"), "kv"]),
    pack([["k", "v"], ["j", 2]]),
    pack([[["k"], "v"]]),
]


@pytest.mark.parametrize("data", KV_WRONG_SHAPE, ids=lambda b: b.hex()[:24])
def test_kv_restore_of_wrong_shape_is_bad_snapshot_and_keeps_state(data: bytes) -> None:
    m = populated_kv()
    before = m.snapshot()
    with pytest.raises(CommandError) as info:
        m.restore(data)
    assert info.value.code == "BAD_SNAPSHOT"
    assert m.snapshot() == before
    assert m.apply(kv("get", "k")) == "v"


# --------------------------------------------------------------------------- corrupt bytes

NOT_MSGPACK = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1", id="reserved-byte"),
    pytest.param(b"\x92", id="truncated-array"),
    pytest.param(b"\x90\x90", id="trailing-data"),
    pytest.param(b"\x91\x92\xa1k", id="truncated-pair"),
]


@pytest.mark.parametrize("cls", [KVStateMachine, RegisterStateMachine])
@pytest.mark.parametrize("data", NOT_MSGPACK)
def test_restore_of_non_msgpack_bytes_is_bad_snapshot(cls: type, data: bytes) -> None:
    m = populated_kv() if cls is KVStateMachine else populated_register()
    before = m.snapshot()
    with pytest.raises(CommandError) as info:
        m.restore(data)
    assert info.value.code == "BAD_SNAPSHOT"
    assert m.snapshot() == before


@pytest.mark.parametrize("cls", [KVStateMachine, RegisterStateMachine])
@pytest.mark.parametrize("data", NOT_MSGPACK)
def test_restore_of_non_msgpack_bytes_leaves_state_unchanged(cls: type, data: bytes) -> None:
    # Whatever happens, the state must not change.
    m = populated_kv() if cls is KVStateMachine else populated_register()
    before = m.snapshot()
    with pytest.raises(ValueError):
        m.restore(data)
    assert m.snapshot() == before


@pytest.mark.parametrize("cls", [KVStateMachine, RegisterStateMachine])
def test_truncated_real_snapshot_leaves_state_unchanged(cls: type) -> None:
    m = populated_kv() if cls is KVStateMachine else populated_register()
    snap = m.snapshot()
    target = cls()
    empty = target.snapshot()
    for cut in range(len(snap)):
        with pytest.raises(ValueError):
            target.restore(snap[:cut])
        assert target.snapshot() == empty


# --------------------------------------------------------------------------- register


def test_register_read_write_and_cas() -> None:
    m = RegisterStateMachine()
    assert m.apply({"op": "read"}) is None
    assert m.apply({"op": "cas", "old": "x", "new": 1}) is False
    assert m.apply({"op": "read"}) is None
    assert m.apply({"op": "cas", "old": None, "new": 1}) is True
    assert m.apply({"op": "read"}) == 1
    assert m.apply({"op": "write", "value": "two"}) is None
    assert m.apply({"op": "read"}) == "two"
    assert m.apply({"op": "cas", "old": "one", "new": 3}) is False
    assert m.apply({"op": "read"}) == "two"
    assert m.apply({"op": "cas", "old": "two", "new": [3, {"x": b"y"}]}) is True
    assert m.apply({"op": "read"}) == [3, {"x": b"y"}]
    assert m.apply({"op": "write", "value": None}) is None
    assert m.apply({"op": "read"}) is None


REGISTER_MALFORMED: list[tuple[Any, str]] = [
    (None, "BAD_COMMAND"),
    ("read", "BAD_COMMAND"),
    (["op", "read"], "BAD_COMMAND"),
    (1, "BAD_COMMAND"),
    ({}, "BAD_COMMAND"),
    ({"value": 1}, "BAD_COMMAND"),
    ({"op": None}, "BAD_COMMAND"),
    ({"op": 1, "value": 1}, "BAD_COMMAND"),
    ({"op": b"write", "value": 1}, "BAD_COMMAND"),
    ({"op": "get"}, "UNKNOWN_OP"),
    ({"op": "put", "value": 1}, "UNKNOWN_OP"),
    ({"op": "WRITE", "value": 1}, "UNKNOWN_OP"),
    ({"op": ""}, "UNKNOWN_OP"),
    ({"op": "write"}, "BAD_ARGUMENT"),
    ({"op": "write", "val": 1}, "BAD_ARGUMENT"),
    ({"op": "cas", "old": {"a": [1, b"\x00", None]}}, "BAD_ARGUMENT"),
    ({"op": "cas", "new": 1}, "BAD_ARGUMENT"),
    ({"op": "cas"}, "BAD_ARGUMENT"),
]


@pytest.mark.parametrize(("command", "code"), REGISTER_MALFORMED, ids=lambda v: f"{v!r:.50}")
def test_register_malformed_command_raises_and_changes_nothing(command: Any, code: str) -> None:
    m = populated_register()
    before = m.snapshot()
    with pytest.raises(CommandError) as info:
        m.apply(command)
    assert info.value.code == code
    assert m.snapshot() == before
    assert m.apply({"op": "read"}) == {"a": [1, b"\x00", None]}


register_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(register_values)
def test_register_snapshot_restore_round_trip(value: Any) -> None:
    m = RegisterStateMachine()
    m.apply({"op": "write", "value": value})
    r = populated_register()
    r.restore(m.snapshot())
    assert r.apply({"op": "read"}) == value
    assert r.snapshot() == m.snapshot()
    # Equal values give equal snapshots however they were reached.
    c = RegisterStateMachine()
    c.apply({"op": "write", "value": "something else"})
    c.apply({"op": "cas", "old": "something else", "new": value})
    assert c.snapshot() == m.snapshot()


def test_register_distinct_values_give_distinct_snapshots() -> None:
    snaps = set()
    for value in [None, 0, 1, "1", b"1", [1], {"1": 1}, 1.5, True, False, ""]:
        m = RegisterStateMachine()
        m.apply({"op": "write", "value": value})
        snaps.add(m.snapshot())
    assert len(snaps) == 11


@pytest.mark.parametrize(
    "data",
    [pack([]), pack([1, 2]), pack(None), pack("x"), pack({"value": 1}), pack(7)],
    ids=lambda b: b.hex(),
)
def test_register_restore_of_wrong_shape_is_bad_snapshot_and_keeps_state(data: bytes) -> None:
    m = populated_register()
    before = m.snapshot()
    with pytest.raises(CommandError) as info:
        m.restore(data)
    assert info.value.code == "BAD_SNAPSHOT"
    assert m.snapshot() == before


def test_reference_machines_satisfy_the_protocol() -> None:
    assert isinstance(KVStateMachine(), StateMachine)
    assert isinstance(RegisterStateMachine(), StateMachine)


# --------------------------------------------------------------------------- SessionTable


class CountingMachine:
    """A KV machine that counts how often ``apply`` is called (including rejections)."""

    def __init__(self) -> None:
        self.inner = KVStateMachine()
        self.calls = 0

    def apply(self, command: Any) -> Any:
        self.calls += 1
        return self.inner.apply(command)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)


def test_session_retry_is_applied_once_and_returns_first_result() -> None:
    machine = CountingMachine()
    t = SessionTable(machine)
    assert t.apply("c", 1, kv("cas", "k", old="", new="x")) is True
    snap = t.snapshot()
    # Re-applying the cas would answer False; the retry must get the cached True.
    assert t.apply("c", 1, kv("cas", "k", old="", new="x")) is True
    assert t.apply("c", 1, kv("cas", "k", old="", new="x")) is True
    assert machine.calls == 1
    assert (t.applied_count, t.duplicate_count) == (1, 2)
    assert t.snapshot() == snap
    assert t.apply("c", 2, kv("append", "k", value="y")) is None
    assert t.apply("c", 2, kv("append", "k", value="y")) is None
    assert t.apply("c", 3, kv("get", "k")) == "xy"
    assert machine.calls == 3


def test_session_retry_answer_ignores_the_retried_command_body() -> None:
    t = SessionTable(KVStateMachine())
    assert t.apply("c", 1, kv("get", "k")) == ""
    t.apply("d", 1, kv("put", "k", value="changed"))
    # Same (client, seq): answered from the table even though a re-read would differ.
    assert t.apply("c", 1, kv("get", "k")) == ""


def test_session_older_seq_is_stale_and_not_applied() -> None:
    machine = CountingMachine()
    t = SessionTable(machine)
    t.apply("c", 1, kv("put", "k", value="1"))
    t.apply("c", 2, kv("put", "k", value="2"))
    snap = t.snapshot()
    result = t.apply("c", 1, kv("put", "k", value="1"))
    assert isinstance(result, CommandRejected)
    assert result.code == "STALE"
    assert machine.calls == 2
    assert t.snapshot() == snap
    assert machine.inner.data == {"k": "2"}
    # The latest seq is still answered from the cache afterwards.
    assert t.apply("c", 2, kv("put", "k", value="2")) is None
    assert t.apply("c", 0, kv("get", "k")) == CommandRejected("STALE", result.message)
    assert machine.calls == 2
    assert t.duplicate_count == 3


def test_session_seq_gaps_are_allowed_but_lower_numbers_are_then_stale() -> None:
    t = SessionTable(KVStateMachine())
    assert t.apply("c", 5, kv("append", "k", value="a")) is None
    stale = t.apply("c", 3, kv("append", "k", value="b"))
    assert isinstance(stale, CommandRejected) and stale.code == "STALE"
    assert t.apply("c", 9, kv("append", "k", value="c")) is None
    assert t.apply(None, 0, kv("get", "k")) == "ac"


def test_session_clients_have_independent_sequences() -> None:
    t = SessionTable(KVStateMachine())
    assert t.apply("a", 1, kv("append", "k", value="a")) is None
    assert t.apply("b", 1, kv("append", "k", value="b")) is None
    assert t.apply("a", 1, kv("append", "k", value="a")) is None  # retry, not applied
    assert t.apply("b", 2, kv("append", "k", value="B")) is None
    assert t.apply(None, 0, kv("get", "k")) == "abB"


def test_session_anonymous_client_always_applies() -> None:
    machine = CountingMachine()
    t = SessionTable(machine)
    for _ in range(3):
        assert t.apply(None, 1, kv("append", "k", value="x")) is None
    assert t.apply(None, 1, kv("get", "k")) == "xxx"
    assert machine.calls == 4
    assert (t.applied_count, t.duplicate_count) == (4, 0)
    assert t.sessions == {}
    # Anonymous commands do not touch named sessions either.
    t.apply("c", 1, kv("append", "k", value="y"))
    t.apply(None, 1, kv("append", "k", value="z"))
    assert t.apply("c", 1, kv("append", "k", value="y")) is None
    assert t.apply(None, 0, kv("get", "k")) == "xxxyz"


def test_session_rejected_command_becomes_cached_rejection() -> None:
    machine = CountingMachine()
    t = SessionTable(machine)
    before = machine.snapshot()
    result = t.apply("c", 1, {"op": "delete", "key": "k"})
    assert isinstance(result, CommandRejected)
    assert result.code == "UNKNOWN_OP"
    assert "delete" in result.message
    assert machine.snapshot() == before
    # A retry returns the same rejection from the cache, without calling the machine.
    assert t.apply("c", 1, {"op": "delete", "key": "k"}) == result
    assert machine.calls == 1
    assert t.applied_count == 1 and t.duplicate_count == 1
    # The rejection still consumed the seq.
    stale = t.apply("c", 0, kv("put", "k", value="v"))
    assert isinstance(stale, CommandRejected) and stale.code == "STALE"
    bad = t.apply(None, 0, None)
    assert bad == CommandRejected("BAD_COMMAND", bad.message)
    bad_arg = t.apply("c", 2, {"op": "put", "key": "k", "value": 3})
    assert isinstance(bad_arg, CommandRejected) and bad_arg.code == "BAD_ARGUMENT"
    assert t.apply("c", 2, kv("put", "k", value="3")) == bad_arg  # cached, not re-applied
    assert machine.inner.data == {}


def _populated_table() -> SessionTable:
    t = SessionTable(KVStateMachine())
    t.apply("alice", 1, kv("put", "k", value="1"))
    t.apply("alice", 2, kv("cas", "k", old="1", new="2"))
    t.apply("bob", 7, {"op": "nope", "key": "k"})
    t.apply("carol", 1, kv("get", "k"))
    t.apply("dave", 3, kv("put", "d", value="x"))
    t.apply(None, 0, kv("append", "k", value="!"))
    return t


def test_session_snapshot_restore_preserves_sessions_and_dedup() -> None:
    original = _populated_table()
    snap = original.snapshot()
    restored = SessionTable(KVStateMachine())
    restored.apply("zed", 1, kv("put", "junk", value="must vanish"))
    restored.restore(snap)
    assert restored.snapshot() == snap
    assert restored.sessions == original.sessions
    assert set(restored.sessions) == {"alice", "bob", "carol", "dave"}
    # Every follow-up answers identically on both replicas.
    follow_ups: list[tuple[str | None, int, Any]] = [
        ("alice", 2, kv("cas", "k", old="1", new="2")),  # retry -> cached True
        ("alice", 1, kv("put", "k", value="1")),  # stale
        ("bob", 7, {"op": "nope", "key": "k"}),  # retry -> cached rejection
        ("carol", 1, kv("get", "k")),  # retry -> cached "2"
        ("zed", 1, kv("get", "junk")),  # new client in the restored table
        ("dave", 4, kv("append", "d", value="y")),
        (None, 0, kv("get", "k")),
        (None, 0, kv("get", "d")),
    ]
    answers = []
    for client, seq, cmd in follow_ups:
        a, b = original.apply(client, seq, cmd), restored.apply(client, seq, cmd)
        assert a == b
        answers.append(a)
    assert answers[0] is True
    assert isinstance(answers[1], CommandRejected) and answers[1].code == "STALE"
    assert isinstance(answers[2], CommandRejected) and answers[2].code == "UNKNOWN_OP"
    assert answers[3] == "2"
    assert answers[4] == ""
    assert answers[6:] == ["2!", "xy"]
    assert original.snapshot() == restored.snapshot()


def test_session_snapshot_is_independent_of_client_order() -> None:
    a, b = SessionTable(KVStateMachine()), SessionTable(KVStateMachine())
    a.apply("x", 1, kv("put", "kx", value="1"))
    a.apply("y", 4, kv("put", "ky", value="2"))
    b.apply("y", 4, kv("put", "ky", value="2"))
    b.apply("x", 1, kv("put", "kx", value="1"))
    assert a.snapshot() == b.snapshot()
    # ... and sensitive to the session contents.
    b.apply("x", 2, kv("get", "kx"))
    assert a.snapshot() != b.snapshot()


def test_session_snapshot_distinguishes_rejection_from_plain_result() -> None:
    a, b = SessionTable(RegisterStateMachine()), SessionTable(RegisterStateMachine())
    a.apply("c", 1, {"op": "bogus"})
    b.apply("c", 1, {"op": "read"})
    assert a.snapshot() != b.snapshot()
    r = SessionTable(RegisterStateMachine())
    r.restore(a.snapshot())
    cached = r.apply("c", 1, {"op": "bogus"})
    assert isinstance(cached, CommandRejected) and cached.code == "UNKNOWN_OP"
    r.restore(b.snapshot())
    assert r.apply("c", 1, {"op": "read"}) is None


def test_session_restore_of_corrupt_snapshot_is_atomic() -> None:
    t = _populated_table()
    before = t.snapshot()
    # Valid machine part, session row with 2 instead of 4 fields.
    corrupt = pack([[["x", 1]], KVStateMachine().snapshot()])
    with pytest.raises(CommandError) as info:
        t.restore(corrupt)
    assert info.value.code == "BAD_SNAPSHOT"
    assert t.snapshot() == before


def test_session_restore_with_bad_machine_part_keeps_sessions() -> None:
    t = _populated_table()
    before = t.snapshot()
    with pytest.raises(CommandError) as info:
        t.restore(pack([[], pack("not a kv snapshot")]))
    assert info.value.code == "BAD_SNAPSHOT"
    assert t.snapshot() == before


# --------------------------------------------------------------------------- hypothesis: dedup

CLIENTS = ["a", "b", "c"]

# A mix of valid and malformed KV commands over a tiny key space, so values collide.
session_commands = st.one_of(
    st.builds(lambda k: kv("get", k), st.sampled_from("xy")),
    st.builds(lambda k, v: kv("put", k, value=v), st.sampled_from("xy"), st.sampled_from("01")),
    st.builds(lambda k, v: kv("append", k, value=v), st.sampled_from("xy"), st.sampled_from("01")),
    st.builds(
        lambda k, o, n: kv("cas", k, old=o, new=n),
        st.sampled_from("xy"),
        st.sampled_from(["", "0", "1", "01"]),
        st.sampled_from("01"),
    ),
    st.sampled_from([{"op": "nope", "key": "x"}, {"op": "put", "key": "x"}, None]),
)


@st.composite
def request_streams(draw: st.DrawFn) -> list[tuple[str | None, int, Any]]:
    """Distinct requests: per client, seqs strictly increase (with occasional gaps)."""
    n = draw(st.integers(0, 25))
    next_seq = dict.fromkeys(CLIENTS, 1)
    reqs: list[tuple[str | None, int, Any]] = []
    for _ in range(n):
        client = draw(st.sampled_from([*CLIENTS, None]))
        cmd = draw(session_commands)
        if client is None:
            reqs.append((None, 0, cmd))
        else:
            seq = next_seq[client]
            next_seq[client] = seq + draw(st.sampled_from([1, 1, 1, 2]))
            reqs.append((client, seq, cmd))
    return reqs


def with_retries(
    reqs: list[tuple[str | None, int, Any]], draw_retries: Callable[[int], list[int]]
) -> list[tuple[int, tuple[str | None, int, Any]]]:
    """Interleave each request with retries of itself or of earlier named requests.

    Returns ``(distinct_index, request)`` pairs: a retry repeats an earlier request exactly.
    """
    log: list[tuple[int, tuple[str | None, int, Any]]] = []
    for i, req in enumerate(reqs):
        log.append((i, req))
        for j in draw_retries(i):
            if reqs[j][0] is not None:
                log.append((j, reqs[j]))
    return log


def model(reqs: list[tuple[str | None, int, Any]]) -> tuple[list[Any], bytes]:
    """Each distinct request applied once, in order, on a plain machine: results, snapshot."""
    plain = KVStateMachine()
    results = []
    for _, _, cmd in reqs:
        try:
            results.append(plain.apply(cmd))
        except CommandError as exc:
            results.append(CommandRejected(exc.code, exc.message))
    return results, plain.snapshot()


@settings(max_examples=100, deadline=None)
@given(request_streams(), st.data())
def test_hypothesis_retries_are_applied_exactly_once(
    reqs: list[tuple[str | None, int, Any]], data: st.DataObject
) -> None:
    expected, plain_snapshot = model(reqs)

    def draw_retries(i: int) -> list[int]:
        return data.draw(st.lists(st.integers(0, i), max_size=2))

    snapshots = []
    for _ in range(2):  # two replicas seeing different retry patterns of the same requests
        table = SessionTable(KVStateMachine())
        latest: dict[str, int] = {}
        for idx, (client, seq, cmd) in with_retries(reqs, draw_retries):
            result = table.apply(client, seq, cmd)
            if client is None or seq > latest.get(client, 0):
                assert result == expected[idx]
                if client is not None:
                    latest[client] = seq
            elif seq == latest[client]:
                assert result == expected[idx]  # the first answer, from the cache
            else:
                assert isinstance(result, CommandRejected) and result.code == "STALE"
        assert table.machine.snapshot() == plain_snapshot
        assert table.applied_count == len(reqs)
        snapshots.append(table.snapshot())
    assert snapshots[0] == snapshots[1]


@settings(max_examples=60, deadline=None)
@given(request_streams(), st.data())
def test_hypothesis_restored_replica_dedups_identically(
    reqs: list[tuple[str | None, int, Any]], data: st.DataObject
) -> None:
    log = with_retries(reqs, lambda i: data.draw(st.lists(st.integers(0, i), max_size=2)))
    cut = data.draw(st.integers(0, len(log)))
    a = SessionTable(KVStateMachine())
    for _, (client, seq, cmd) in log[:cut]:
        a.apply(client, seq, cmd)
    b = SessionTable(KVStateMachine())
    b.restore(a.snapshot())
    assert b.snapshot() == a.snapshot()
    for _, (client, seq, cmd) in log[cut:]:
        assert a.apply(client, seq, cmd) == b.apply(client, seq, cmd)
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize(
    "result",
    [None, "v", 7, ["ok", 1], {"a": [1, 2]}, b"\x00", CommandRejected("NO_KEY", "missing")],
)
def test_one_result_wire_shape_round_trips(result: object) -> None:
    wire = encode_result(result)
    assert wire[0] in ("ok", "rejected")
    back = decode_result(msgpack.unpackb(pack(wire), raw=False))
    assert pack(encode_result(back)) == pack(wire)
    assert isinstance(back, CommandRejected) == isinstance(result, CommandRejected)


@pytest.mark.parametrize(
    "raw",
    [None, [], ["ok"], ["ok", 1, 2], [1, None], ["rejected", "C"], ["rejected", 1, "m"], "ok"],
)
def test_a_result_of_another_shape_is_a_value_error(raw: object) -> None:
    with pytest.raises(ValueError, match="a result is"):
        decode_result(raw)
