"""Replicas are compared by the bytes of what they replicated, never by ``==``.

``float("nan") != float("nan")``: a check that compares decoded commands or states with
``==`` reports two byte-identical NaN-carrying copies as different (a false alarm), and the
comparisons here must not.
"""

from __future__ import annotations

import msgpack

from ruflo_consensus.check.convergence import (
    AckedWrite,
    ClientRead,
    check_acknowledged_writes,
    check_monotonic_reads,
    converged,
)
from ruflo_consensus.check.encoded import same_command, same_state, state_bytes, wire_bytes
from ruflo_consensus.crdt_machines import HlcTimestamp

NAN, INF = float("nan"), float("inf")


def _copy(value: object) -> object:
    """What a replica holds after the value went over the wire: new objects, a new NaN."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def test_a_nan_carrying_command_and_its_decoded_copy_are_the_same_command() -> None:
    command = {"op": "budget.open", "budget": {"max_hops": NAN}, "now": 1}
    copy = _copy(command)
    assert copy != command  # what the old checks relied on
    assert same_command(command, copy) and wire_bytes(command) == wire_bytes(copy)
    assert same_command([NAN, INF, -INF], _copy([NAN, INF, -INF]))


def test_commands_that_differ_in_a_non_finite_value_or_a_type_differ() -> None:
    assert not same_command({"v": NAN}, {"v": INF})
    assert not same_command({"v": INF}, {"v": -INF})
    assert not same_command({"v": 1}, {"v": 1.0})  # == says equal; the bytes do not
    assert not same_command("a", b"a")


def test_states_compare_in_key_order_and_nan_equals_its_copy() -> None:
    a = {"x": NAN, "y": {"b": 1, "a": [INF, None]}}
    b = {"y": {"a": [INF, None], "b": 1}, "x": NAN}
    assert same_state(a, b) and state_bytes(a) == state_bytes(_copy(b))
    assert not same_state({"x": NAN}, {"x": INF})
    assert same_state({1: "a", "k": "b"}, {"k": "b", 1: "a"})  # mixed key types
    assert same_state(object, object)  # no msgpack form: compared by repr, never raises


def test_convergence_groups_replicas_by_encoded_state() -> None:
    sv = b"\x00"
    same = converged(
        {"n1": {"kv": {"k": NAN}}, "n2": _copy({"kv": {"k": NAN}})}, {"n1": sv, "n2": sv}
    )
    assert same.converged, same.describe()
    different = converged(
        {"n1": {"kv": {"k": NAN}}, "n2": {"kv": {"k": INF}}}, {"n1": sv, "n2": sv}
    )
    assert not different.converged
    assert different.differing_values == ("n2",)


def test_acknowledged_writes_and_monotonic_reads_compare_values_by_bytes() -> None:
    ts = HlcTimestamp(5, 0, "n1")
    final = {"kv": {"k": {"value": NAN, "ts": list(ts)}}, "counters": {}}
    put = AckedWrite("n1", "put", "k", value=_copy(NAN), ts=ts)
    assert check_acknowledged_writes([put], final) == []
    lost = AckedWrite("n1", "put", "k", value=INF, ts=ts)
    assert check_acknowledged_writes([lost], final) != []
    reads = [ClientRead("c", "k", ts, NAN), ClientRead("c", "k", ts, _copy(NAN))]
    assert check_monotonic_reads(reads) == []
    assert check_monotonic_reads([ClientRead("c", "k", ts, NAN), ClientRead("c", "k", ts, INF)])
