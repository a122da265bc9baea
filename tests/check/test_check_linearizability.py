"""Tests for the linearizability search, the models, generators and failure reports."""

from __future__ import annotations

import random
import time
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.check import (
    CheckResult,
    InvalidOperationError,
    KVModel,
    Model,
    Op,
    Operation,
    RegisterModel,
    UnknownModelError,
    check_history,
    generate_history,
    get_model,
    mutate_history,
    pair_operations,
    register_model,
)

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def h(*events: tuple[Any, ...]) -> list[Op]:
    """Build a history from (process, type, f, value[, key]) tuples."""
    ops = []
    for ev in events:
        process, typ, f, value = ev[:4]
        key = ev[4] if len(ev) > 4 else None
        ops.append(Op(process, typ, f, key, value))
    return ops


def call(process: Any, f: str, value: Any = None, key: Any = None) -> tuple[Any, ...]:
    return (process, "invoke", f, value, key)


def ok(process: Any, f: str, value: Any = None, key: Any = None) -> tuple[Any, ...]:
    return (process, "ok", f, value, key)


def info(process: Any, f: str, value: Any = None, key: Any = None) -> tuple[Any, ...]:
    return (process, "info", f, value, key)


def fail(process: Any, f: str, value: Any = None, key: Any = None) -> tuple[Any, ...]:
    return (process, "fail", f, value, key)


def brute_force(ops: Sequence[Op], model: Model) -> bool:
    """Independent reference: try every order consistent with real time (no memo, no
    partitions, no simplification). ok ops must all be placed; info ops may be left out.
    """
    pending: dict[Any, int] = {}
    entries: list[tuple[int, float, bool, Operation]] = []  # call, ret, is_ok, op
    for pos, op in enumerate(ops):
        if op.type == "invoke":
            pending[op.process] = pos
            continue
        start = pending.pop(op.process)
        if op.type == "fail":
            continue
        inv = ops[start]
        is_ok = op.type == "ok"
        operation = Operation(
            index=len(entries),
            process=inv.process,
            f=inv.f,
            key=inv.key,
            input=inv.value,
            output=op.value if is_ok else None,
            call=start,
            ret=pos,
            status="ok" if is_ok else "info",
        )
        entries.append((start, pos if is_ok else float("inf"), is_ok, operation))
    for process, start in pending.items():
        inv = ops[start]
        operation = Operation(
            len(entries), process, inv.f, inv.key, inv.value, None, start, None, "info"
        )
        entries.append((start, float("inf"), False, operation))
    n = len(entries)
    must_ok = sum(1 for e in entries if e[2])

    def search(placed: frozenset[int], state: Any, ok_done: int) -> bool:
        if ok_done == must_ok:
            return True
        for i in range(n):
            if i in placed:
                continue
            # every op that returned before i was called must already be placed
            if any(j not in placed and entries[j][1] < entries[i][0] for j in range(n)):
                continue
            legal, new_state = model.step(state, entries[i][3])
            if legal and search(placed | {i}, new_state, ok_done + entries[i][2]):
                return True
        return False

    return search(frozenset(), model.init(), 0)


def assert_verdict(ops: list[Op], model: str, expected: bool) -> CheckResult:
    result = check_history(ops, model)
    assert result.linearizable is expected, result.failure.render() if result.failure else ""
    assert brute_force(ops, get_model(model)) is expected
    if expected:
        assert result.failure is None
    else:
        assert result.failure is not None
    return result


# --------------------------------------------------------------------------------------
# hand-built register histories
# --------------------------------------------------------------------------------------


def test_sequential_write_then_read() -> None:
    ops = h(call(0, "write", 1), ok(0, "write", 1), call(1, "read"), ok(1, "read", 1))
    result = assert_verdict(ops, "register", True)
    assert result.operations == 2
    assert result.partitions == 1


def test_initial_read_is_none() -> None:
    assert_verdict(h(call(0, "read"), ok(0, "read", None)), "register", True)
    assert_verdict(h(call(0, "read"), ok(0, "read", 0)), "register", False)


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    ops = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(0, "write", 2),
        ok(0, "write", 2),
        call(1, "read"),
        ok(1, "read", 1),
    )
    result = assert_verdict(ops, "register", False)
    failure = result.failure
    assert failure is not None
    assert failure.blocking.f == "read" and failure.blocking.output == 1
    assert [op.input for op in failure.prefix] == [1, 2]
    assert failure.state == 2
    assert failure.window == (failure.blocking,)
    text = failure.render()
    assert "could not be linearized" in text
    assert "read -> 1" in text
    assert "Model state after that prefix: 2" in text
    assert "call 5, return 6" in text


@pytest.mark.parametrize("observed", [None, 1])
def test_read_concurrent_with_write_may_see_either_value(observed: Any) -> None:
    ops = h(call(0, "write", 1), call(1, "read"), ok(1, "read", observed), ok(0, "write", 1))
    assert_verdict(ops, "register", True)


def test_concurrent_read_cannot_see_a_third_value() -> None:
    ops = h(call(0, "write", 1), call(1, "read"), ok(1, "read", 2), ok(0, "write", 1))
    assert_verdict(ops, "register", False)


def test_read_of_a_value_never_written() -> None:
    ops = h(call(0, "write", 1), ok(0, "write", 1), call(1, "read"), ok(1, "read", 7))
    assert_verdict(ops, "register", False)


def test_two_reads_must_agree_on_the_order_of_concurrent_writes() -> None:
    # Writes 1 and 2 overlap. A reader sees 1 then 2, another sees 2 then 1, all after
    # both writes completed: impossible.
    ops = h(
        call(0, "write", 1),
        call(1, "write", 2),
        ok(0, "write", 1),
        ok(1, "write", 2),
        call(2, "read"),
        ok(2, "read", 2),
        call(3, "read"),
        ok(3, "read", 1),
    )
    assert_verdict(ops, "register", False)


def test_cas_success_and_failure() -> None:
    good = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(1, "cas", [1, 2]),
        ok(1, "cas", [1, 2]),
        call(2, "cas", [1, 3]),
        fail(2, "cas", [1, 3]),  # found 2, did nothing
        call(0, "read"),
        ok(0, "read", 2),
    )
    assert_verdict(good, "register", True)
    # a cas that claims success although the register cannot hold its old value
    bad = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(1, "cas", [5, 2]),
        ok(1, "cas", [5, 2]),
    )
    assert_verdict(bad, "register", False)
    # a failed cas had no effect: reading its new value is not linearizable
    bad2 = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(1, "cas", [1, 2]),
        fail(1, "cas", [1, 2]),
        call(0, "read"),
        ok(0, "read", 2),
    )
    assert_verdict(bad2, "register", False)


def test_failed_write_did_not_happen() -> None:
    ops = h(call(0, "write", 9), fail(0, "write", 9), call(1, "read"), ok(1, "read", 9))
    result = assert_verdict(ops, "register", False)
    assert result.operations == 2


@pytest.mark.parametrize("observed", [None, 2])
def test_info_write_may_or_may_not_have_happened(observed: Any) -> None:
    ops = h(call(0, "write", 2), info(0, "write", 2), call(1, "read"), ok(1, "read", observed))
    assert_verdict(ops, "register", True)


def test_info_write_can_take_effect_long_after_its_completion() -> None:
    ops = h(
        call(0, "write", 2),
        info(0, "write", 2),
        call(1, "write", 3),
        ok(1, "write", 3),
        call(1, "read"),
        ok(1, "read", 3),
        call(1, "read"),
        ok(1, "read", 2),
    )
    assert_verdict(ops, "register", True)


def test_info_write_cannot_be_undone_once_observed() -> None:
    ops = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(1, "write", 2),
        info(1, "write", 2),
        call(2, "read"),
        ok(2, "read", 2),
        call(2, "read"),
        ok(2, "read", 1),
    )
    assert_verdict(ops, "register", False)


def test_info_write_cannot_precede_its_invoke() -> None:
    ops = h(
        call(1, "read"),
        ok(1, "read", 2),
        call(0, "write", 2),
        info(0, "write", 2),
    )
    assert_verdict(ops, "register", False)


def test_unmatched_invoke_is_treated_as_info() -> None:
    ops = h(call(0, "write", 4), call(1, "read"), ok(1, "read", 4))
    result = assert_verdict(ops, "register", True)
    assert result.operations == 2


def test_info_cas_may_swap() -> None:
    ops = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(1, "cas", [1, 2]),
        info(1, "cas", [1, 2]),
        call(2, "read"),
        ok(2, "read", 2),
    )
    assert_verdict(ops, "register", True)
    ops2 = h(
        call(0, "write", 1),
        ok(0, "write", 1),
        call(1, "cas", [3, 2]),
        info(1, "cas", [3, 2]),
        call(2, "read"),
        ok(2, "read", 2),
    )
    assert_verdict(ops2, "register", False)


def test_info_reads_are_dropped() -> None:
    ops = h(call(0, "read"), info(0, "read"), call(1, "write", 1), ok(1, "write", 1))
    assert_verdict(ops, "register", True)


def test_values_from_lists_and_tuples_compare_equal() -> None:
    ops = [
        Op(0, "invoke", "write", value=[1, [2]]),
        Op(0, "ok", "write", value=[1, [2]]),
        Op(1, "invoke", "read"),
        Op(1, "ok", "read", value=(1, (2,))),
    ]
    assert check_history(ops, "register").linearizable is True


# --------------------------------------------------------------------------------------
# hand-built kv histories
# --------------------------------------------------------------------------------------


def test_kv_unwritten_key_reads_empty_string() -> None:
    ops = h(
        call(0, "get", None, "a"),
        ok(0, "get", "", "a"),
        call(0, "get", None, "b"),
        ok(0, "get", None, "b"),
    )
    assert_verdict(ops, "kv", True)


def test_kv_append_concatenates() -> None:
    ops = h(
        call(0, "put", "x", "k"),
        ok(0, "put", "x", "k"),
        call(1, "append", "y", "k"),
        call(2, "append", "z", "k"),
        ok(1, "append", "y", "k"),
        ok(2, "append", "z", "k"),
        call(0, "get", None, "k"),
        ok(0, "get", "xzy", "k"),
    )
    assert_verdict(ops, "kv", True)
    bad = [*ops[:-1], Op(0, "ok", "get", "k", "xy")]
    assert_verdict(bad, "kv", False)


def test_kv_stale_get_is_caught_per_key() -> None:
    ops = h(
        call(0, "put", "1", "a"),
        ok(0, "put", "1", "a"),
        call(1, "put", "1", "b"),
        ok(1, "put", "1", "b"),
        call(0, "put", "2", "a"),
        ok(0, "put", "2", "a"),
        call(2, "get", None, "b"),
        ok(2, "get", "1", "b"),
        call(2, "get", None, "a"),
        ok(2, "get", "1", "a"),
    )
    result = assert_verdict(ops, "kv", False)
    assert result.partitions == 2
    assert result.failure is not None
    assert result.failure.key == "a"
    assert "key 'a'" in result.failure.render()


def test_kv_cas_on_unwritten_key_compares_with_empty_string() -> None:
    ops = h(
        call(0, "cas", ["", "v"], "k"),
        ok(0, "cas", ["", "v"], "k"),
        call(1, "get", None, "k"),
        ok(1, "get", "v", "k"),
    )
    assert_verdict(ops, "kv", True)
    ops2 = h(call(0, "cas", ["w", "v"], "k"), ok(0, "cas", ["w", "v"], "k"))
    assert_verdict(ops2, "kv", False)


def test_kv_unobserved_info_put_still_needed_for_an_append() -> None:
    # Appending to the integer 5 is illegal, so the unobserved info put of "x" must have
    # happened before the append: simplification must not drop it.
    ops = h(
        call(0, "put", 5, "k"),
        ok(0, "put", 5, "k"),
        call(1, "put", "x", "k"),
        info(1, "put", "x", "k"),
        call(0, "append", "y", "k"),
        ok(0, "append", "y", "k"),
        call(0, "put", "z", "k"),
        ok(0, "put", "z", "k"),
        call(0, "get", None, "k"),
        ok(0, "get", "z", "k"),
    )
    assert_verdict(ops, "kv", True)


def test_kv_aliases_read_write() -> None:
    ops = h(
        call(0, "write", "v", 1),
        ok(0, "write", "v", 1),
        call(1, "read", None, 1),
        ok(1, "read", "v", 1),
    )
    assert check_history(ops, "kv").linearizable is True


def test_invalid_operations_are_rejected() -> None:
    bad_cas = h(call(0, "cas", 5), ok(0, "cas", 5))
    with pytest.raises(InvalidOperationError):
        check_history(bad_cas, "register")
    with pytest.raises(InvalidOperationError):
        check_history(h(call(0, "dequeue"), ok(0, "dequeue")), "register")
    with pytest.raises(InvalidOperationError):
        check_history(h(call(0, "append", 3, "k"), ok(0, "append", 3, "k")), "kv")
    with pytest.raises(UnknownModelError):
        check_history(h(call(0, "read"), ok(0, "read")), "nope")


# --------------------------------------------------------------------------------------
# generated histories
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["register", "kv"])
@pytest.mark.parametrize("info_rate", [0.0, 0.15])
def test_generated_histories_are_linearizable(model: str, info_rate: float) -> None:
    for seed in range(40):
        n_ops = [5, 20, 80, 300][seed % 4]
        ops = generate_history(model, n_ops, 1 + seed % 6, seed, n_keys=3, info_rate=info_rate)
        assert sum(op.type == "invoke" for op in ops) == n_ops
        result = check_history(ops, model, timeout=30)
        assert result.linearizable is True, (model, seed)
        assert result.operations == n_ops


def test_generator_is_deterministic_and_uses_info() -> None:
    a = generate_history("kv", 300, 5, seed=11, info_rate=0.2)
    b = generate_history("kv", 300, 5, seed=11, info_rate=0.2)
    c = generate_history("kv", 300, 5, seed=12, info_rate=0.2)
    assert a == b
    assert a != c
    types = {op.type for op in a}
    assert types == {"invoke", "ok", "fail", "info"}
    # fresh process ids after info completions, like Jepsen
    assert max(op.process for op in a if isinstance(op.process, int)) >= 5
    with pytest.raises(UnknownModelError):
        generate_history("queue", 10, 2, seed=0)


@pytest.mark.parametrize("model", ["register", "kv"])
@pytest.mark.parametrize("kind", ["never-written", "stale"])
def test_mutated_histories_are_not_linearizable(model: str, kind: str) -> None:
    for seed in range(25):
        ops = generate_history(model, [10, 60, 250][seed % 3], 4, seed, n_keys=2, info_rate=0.1)
        bad = mutate_history(ops, seed, kind=kind)
        assert bad != ops
        result = check_history(bad, model, timeout=30)
        assert result.linearizable is False, (model, kind, seed)
        assert result.failure is not None
        assert result.failure.render()


def test_mutation_without_reads_appends_an_impossible_read() -> None:
    ops = h(call(0, "write", 1), ok(0, "write", 1))
    bad = mutate_history(ops, 0)
    assert len(bad) == 4 and bad[-1].f == "read"
    assert check_history(bad, "register").linearizable is False


@pytest.mark.parametrize("model", ["register", "kv"])
def test_small_generated_and_mutated_histories_agree_with_brute_force(model: str) -> None:
    for seed in range(60):
        ops = generate_history(model, 2 + seed % 5, 1 + seed % 3, seed, n_keys=2, info_rate=0.2)
        assert brute_force(ops, get_model(model)) is True
        assert check_history(ops, model).linearizable is True
        for kind in ("never-written", "stale"):
            bad = mutate_history(ops, seed, kind=kind)
            expected = brute_force(bad, get_model(model))
            assert expected is False
            assert check_history(bad, model).linearizable is expected


# Random (usually non-linearizable) histories over a tiny value domain, compared with the
# brute-force checker: this is what catches a wrong search, memo or simplification.


@st.composite
def random_history(draw: st.DrawFn, model: str) -> list[Op]:
    n_proc = draw(st.integers(1, 3))
    budget = draw(st.integers(1, 6))
    ops: list[Op] = []
    pending: dict[int, Op] = {}
    dead: set[int] = set()  # processes whose last invoke never completes
    started = 0
    values: list[Any] = ["", "a", "b"] if model == "kv" else [None, 1, 2]
    value: Any
    while (started < budget and len(dead) < n_proc) or pending:
        p = draw(st.integers(0, n_proc - 1))
        if p in dead:
            continue
        if p in pending:
            inv = pending.pop(p)
            if draw(st.integers(0, 9)) == 0:
                dead.add(p)  # leave it outstanding: it never completes
                continue
            typ = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
            value = inv.value
            if inv.f in ("read", "get") and typ == "ok":
                value = draw(st.sampled_from(values))
            ops.append(Op(p, typ, inv.f, inv.key, value))
        elif started < budget and len(dead) < n_proc:
            started += 1
            if model == "kv":
                f = draw(st.sampled_from(["get", "put", "append", "cas"]))
                key = draw(st.sampled_from(["x", "y"]))
            else:
                f = draw(st.sampled_from(["read", "write", "cas"]))
                key = None
            if f in ("read", "get"):
                value = None
            elif f == "cas":
                value = (draw(st.sampled_from(values)), draw(st.sampled_from(values)))
            else:
                value = draw(st.sampled_from(values[1:]))
            inv = Op(p, "invoke", f, key, value)
            pending[p] = inv
            ops.append(inv)
        else:
            # no budget left and p idle: complete someone else
            q = next(iter(pending))
            inv = pending.pop(q)
            ops.append(
                Op(
                    q,
                    "ok",
                    inv.f,
                    inv.key,
                    inv.value if inv.f not in ("read", "get") else values[0],
                )
            )
    return ops


@settings(max_examples=300, deadline=None)
@given(ops=random_history("register"))
def test_random_register_histories_match_brute_force(ops: list[Op]) -> None:
    expected = brute_force(ops, get_model("register"))
    assert check_history(ops, "register").linearizable is expected


@settings(max_examples=300, deadline=None)
@given(ops=random_history("kv"))
def test_random_kv_histories_match_brute_force(ops: list[Op]) -> None:
    expected = brute_force(ops, get_model("kv"))
    assert check_history(ops, "kv").linearizable is expected


def longest_prefix(ops: list[Operation], model: Model) -> int:
    """Brute force: the longest real-time-respecting legal sequence of these operations."""
    inf = float("inf")
    rets = [op.ret if op.status == "ok" and op.ret is not None else inf for op in ops]

    def search(placed: frozenset[int], state: Any) -> int:
        best = len(placed)
        for i, op in enumerate(ops):
            if i in placed:
                continue
            if any(j not in placed and rets[j] < op.call for j in range(len(ops))):
                continue
            legal, new_state = model.step(state, op)
            if legal:
                best = max(best, search(placed | {i}, new_state))
        return best

    return search(frozenset(), model.init())


@settings(max_examples=200, deadline=None)
@given(ops=random_history("register"))
def test_failure_prefix_is_a_longest_prefix(ops: list[Op]) -> None:
    model = get_model("register")
    result = check_history(ops, model)
    if result.linearizable is not False:
        return
    failure = result.failure
    assert failure is not None
    part = model.simplify(pair_operations(ops))
    assert len(failure.prefix) == longest_prefix(part, model)
    # the prefix replays legally to the reported state and respects real time
    state = model.init()
    for op in failure.prefix:
        legal, state = model.step(state, op)
        assert legal
    assert state == failure.state
    order = {op.index: n for n, op in enumerate(failure.prefix)}
    for op in failure.prefix:
        for other in part:
            if other.status == "ok" and other.ret is not None and other.ret < op.call:
                assert order.get(other.index, len(order)) < order[op.index]
    placed = set(order)
    assert failure.blocking.index not in placed
    assert failure.blocking in failure.window
    # the documented guarantee: no window operation can be applied to the state
    for op in failure.window:
        assert op.index not in placed
        assert op.call < (failure.blocking.ret or 0)
        assert not model.step(failure.state, op)[0]
    # and the window is every unplaced operation invoked before the blocking return
    expected = {
        op.index for op in part if op.index not in placed and op.call < (failure.blocking.ret or 0)
    }
    assert {op.index for op in failure.window} == expected


# --------------------------------------------------------------------------------------
# user-defined models
# --------------------------------------------------------------------------------------


class CounterModel(Model):
    """inc adds its value; read returns the total."""

    name = "test-counter"

    def init(self) -> Hashable:
        return 0

    def step(self, state: int, op: Operation) -> tuple[bool, Hashable]:
        if op.f == "inc":
            return True, state + op.input
        return (op.is_info or op.output == state), state

    def read_only(self, op: Operation) -> bool:
        return op.f == "read"


class QueueModel(Model):
    """A FIFO queue: enqueue v; dequeue returns the oldest element (None when empty)."""

    name = "test-queue"

    def init(self) -> Hashable:
        return ()

    def step(self, state: tuple[Any, ...], op: Operation) -> tuple[bool, Hashable]:
        if op.f == "enqueue":
            return True, (*state, op.input)
        if not state:
            return (op.is_info or op.output is None), state
        return (op.is_info or op.output == state[0]), state[1:]

    def describe_state(self, state: Any) -> str:
        return "queue" + repr(list(state))


def test_user_counter_model() -> None:
    model = CounterModel()
    ops = h(
        call(0, "inc", 2),
        call(1, "inc", 3),
        call(2, "read"),
        ok(2, "read", 3),
        ok(0, "inc", 2),
        ok(1, "inc", 3),
        call(2, "read"),
        ok(2, "read", 5),
    )
    assert check_history(ops, model).linearizable is True
    assert brute_force(ops, model) is True
    bad = [*ops[:-1], Op(2, "ok", "read", value=4)]
    assert check_history(bad, model).linearizable is False


def test_user_queue_model_registered_by_name() -> None:
    register_model(QueueModel(), replace=True)
    assert isinstance(get_model("test-queue"), QueueModel)
    ops = h(
        call(0, "enqueue", "a"),
        ok(0, "enqueue", "a"),
        call(0, "enqueue", "b"),
        call(1, "dequeue"),
        ok(1, "dequeue", "a"),
        ok(0, "enqueue", "b"),
        call(1, "dequeue"),
        ok(1, "dequeue", "b"),
    )
    assert check_history(ops, "test-queue").linearizable is True
    swapped = [
        *ops[:4],
        Op(1, "ok", "dequeue", value="b"),
        *ops[5:7],
        Op(1, "ok", "dequeue", value="a"),
    ]
    result = check_history(swapped, "test-queue")
    assert result.linearizable is False
    assert brute_force(swapped, QueueModel()) is False
    assert result.failure is not None
    assert "queue[" in result.failure.render()


def test_register_model_rejects_duplicates() -> None:
    class Dup(RegisterModel):
        name = "register"

    with pytest.raises(ValueError):
        register_model(Dup())
    assert type(get_model("register")) is RegisterModel
    with pytest.raises(UnknownModelError) as info_:
        get_model("does-not-exist")
    assert "register" in str(info_.value)  # lists the known models


def test_kv_model_partitions_by_key() -> None:
    ops = generate_history("kv", 200, 4, seed=3, n_keys=5)
    result = check_history(ops, KVModel())
    assert result.partitions == 5


# --------------------------------------------------------------------------------------
# timeout and performance
# --------------------------------------------------------------------------------------


def hard_history(n: int) -> list[Op]:
    """n concurrent writes, then a read of a value never written: the search has to
    rule out ~n * 2**n configurations."""
    ops = [Op(p, "invoke", "write", value=p) for p in range(n)]
    ops += [Op(p, "ok", "write", value=p) for p in range(n)]
    ops += [Op(n, "invoke", "read"), Op(n, "ok", "read", value=-1)]
    return ops


def test_timeout_gives_unknown() -> None:
    start = time.monotonic()
    result = check_history(hard_history(24), "register", timeout=0.2)
    elapsed = time.monotonic() - start
    assert result.linearizable is None
    assert result.failure is None
    assert elapsed < 5
    # the same shape, small enough, is decided
    assert check_history(hard_history(6), "register", timeout=30).linearizable is False


def test_ten_thousand_ops_kv_are_decided() -> None:
    # How fast is measured by `ruflo-consensus bench check` (docs/benchmarks.md), not here:
    # a timed assertion fails on a busy machine and proves nothing about correctness.
    ops = generate_history("kv", 10_000, 10, seed=0, n_keys=10)
    result = check_history(ops, "kv")
    assert result.linearizable is True
    assert result.operations == 10_000


def test_failure_report_window_for_random_mutation() -> None:
    rng = random.Random(4)
    ops = generate_history("kv", 400, 6, seed=4, n_keys=3)
    bad = mutate_history(ops, rng.randrange(1000))
    result = check_history(bad, "kv")
    failure = result.failure
    assert failure is not None
    # the blocking op is the mutated get, and it is in the window
    assert failure.blocking.f == "get"
    assert str(failure.blocking.output).startswith("never-written-")
    assert failure.blocking in failure.window
    assert all(op.call < (failure.blocking.ret or 0) for op in failure.window)
    prefix_ids = {op.index for op in failure.prefix}
    assert not prefix_ids & {op.index for op in failure.window}
    # replaying the prefix through the model reaches the reported state
    model = get_model("kv")
    state = model.init()
    for op in failure.prefix:
        legal, state = model.step(state, op)
        assert legal
    assert state == failure.state
