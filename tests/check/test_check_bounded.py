"""The checker in bounded memory: partition histories, memo budgets, progress, turns.

Nothing here asserts on speed; the figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from ruflo_consensus.check import Op, check_history, generate_history, get_model
from ruflo_consensus.check.command import run_bench_check, run_check
from ruflo_consensus.check.generate import NetworkPartition
from ruflo_consensus.check.history import dump_history_jsonl
from ruflo_consensus.check.linearizability import CheckProgress
from ruflo_consensus.check.models import Operation
from ruflo_consensus.cli import main


def partitioned(seed: int, stale: bool, n_ops: int = 400, key: int = 2) -> list[Op]:
    return generate_history(
        "kv", n_ops, 50, seed, n_keys=6, partition=NetworkPartition(key=key, stale=stale)
    )


# --------------------------------------------------------------------------------------
# the generator's partition
# --------------------------------------------------------------------------------------


def test_partition_generator_is_seeded_and_cuts_clients_off() -> None:
    a = partitioned(5, stale=True)
    assert a == partitioned(5, stale=True)
    assert a != partitioned(6, stale=True)
    # cut-off clients time out: many more info completions than without a partition
    plain = generate_history("kv", 400, 50, 5, n_keys=6)
    assert sum(op.type == "info" for op in plain) == 0
    assert sum(op.type == "info" for op in partitioned(5, stale=False)) > 20
    # without a partition the generator draws exactly as before (same history)
    assert plain == generate_history("kv", 400, 50, 5, n_keys=6, partition=None)


def test_partition_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        NetworkPartition(start=0.8, end=0.2)
    with pytest.raises(ValueError):
        NetworkPartition(minority=1.0)
    with pytest.raises(ValueError):
        generate_history("kv", 10, 1, 0, partition=NetworkPartition())


def test_short_stale_partition_still_breaks_the_key() -> None:
    ops = generate_history("kv", 6, 3, 1, n_keys=2, partition=NetworkPartition(key=1, stale=True))
    result = check_history(ops, "kv")
    assert result.linearizable is False
    assert result.failure is not None and result.failure.key == 1


# --------------------------------------------------------------------------------------
# 50-client histories
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_fifty_client_partition_history_is_linearizable(seed: int) -> None:
    result = check_history(partitioned(seed, stale=False), "kv")
    assert result.linearizable is True, result.reason
    assert result.reason is None and result.failure is None
    assert result.partitions == 6


@pytest.mark.parametrize("seed", range(4))
def test_fifty_client_stale_partition_names_the_key(seed: int) -> None:
    result = check_history(partitioned(seed, stale=True), "kv")
    assert result.linearizable is False
    failure = result.failure
    assert failure is not None
    assert failure.key == 2
    assert result.reason is not None and result.reason.startswith("key 2: get 2 -> ")
    # the blocking op is a get of the stale key, and the report's claims hold
    assert failure.blocking.f == "get" and failure.blocking.key == 2
    model = get_model("kv")
    state = model.init()
    for op in failure.prefix:
        legal, state = model.step(state, op)
        assert legal
    assert state == failure.state
    assert not any(model.step(failure.state, op)[0] for op in failure.window)


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("budget", [1, 30, 300, 3000])
def test_small_memo_budget_gives_unknown_never_a_wrong_verdict(stale: bool, budget: int) -> None:
    ops = partitioned(1, stale=stale)
    result = check_history(ops, "kv", memo_budget=budget)
    assert result.linearizable in (None, not stale)
    if result.linearizable is None:
        assert result.reason is not None and "memo budget" in result.reason
        assert result.failure is None


def test_tiny_budget_is_unknown_and_says_where() -> None:
    result = check_history(partitioned(0, stale=True), "kv", memo_budget=1)
    assert result.linearizable is None
    assert result.reason is not None
    assert result.reason.startswith("memo budget of 1 configurations exhausted on key ")
    with pytest.raises(ValueError):
        check_history(partitioned(0, stale=True), "kv", memo_budget=-1)


def test_progress_reports_every_key() -> None:
    seen: list[CheckProgress] = []
    result = check_history(partitioned(0, stale=False), "kv", progress=seen.append)
    assert result.linearizable is True
    assert seen[0].keys_done == 0
    assert seen[-1].keys_done == seen[-1].keys_total == result.partitions
    assert [p.keys_done for p in seen] == sorted(p.keys_done for p in seen)


def test_failing_key_found_behind_a_key_that_exhausts_its_first_turns() -> None:
    # key "hard": 12 concurrent puts then an impossible read (costly to refute);
    # key "easy": a plainly stale read. Turns decide "easy" first.
    hard = [Op(p, "invoke", "put", "hard", f"h{p}") for p in range(12)]
    hard += [Op(p, "ok", "put", "hard", f"h{p}") for p in range(12)]
    hard += [Op(12, "invoke", "get", "hard"), Op(12, "ok", "get", "hard", "h0")]
    easy = [
        Op(20, "invoke", "put", "easy", "x"),
        Op(20, "ok", "put", "easy", "x"),
        Op(20, "invoke", "put", "easy", "y"),
        Op(20, "ok", "put", "easy", "y"),
        Op(21, "invoke", "get", "easy"),
        Op(21, "ok", "get", "easy", "x"),
    ]
    result = check_history(hard + easy, "kv")
    assert result.linearizable is False
    assert result.failure is not None and result.failure.key == "easy"


# --------------------------------------------------------------------------------------
# the pruned search against a brute-force checker
# --------------------------------------------------------------------------------------


def brute(ops: Sequence[Op], model_name: str) -> bool:
    """Every subset of info ops, every order of the chosen ops, checked in real time."""
    model = get_model(model_name)
    pending: dict[Any, int] = {}
    done: list[tuple[int, float, str, Op, Op]] = []
    for pos, op in enumerate(ops):
        if op.type == "invoke":
            pending[op.process] = pos
            continue
        start = pending.pop(op.process)
        if op.type != "fail":
            done.append((start, pos if op.type == "ok" else float("inf"), op.type, ops[start], op))
    for start in pending.values():
        done.append((start, float("inf"), "info", ops[start], ops[start]))
    paired = [
        (
            call,
            ret,
            Operation(
                n,
                inv.process,
                inv.f,
                inv.key,
                inv.value,
                end.value if kind == "ok" else None,
                call,
                None if ret == float("inf") else int(ret),
                "ok" if kind == "ok" else "info",
            ),
        )
        for n, (call, ret, kind, inv, end) in enumerate(done)
    ]
    oks = [p for p in paired if p[2].status == "ok"]
    infos = [p for p in paired if p[2].status != "ok"]
    for size in range(len(infos) + 1):
        for chosen in itertools.combinations(infos, size):
            for order in itertools.permutations(oks + list(chosen)):
                if any(
                    later[1] < earlier[0]
                    for x, earlier in enumerate(order)
                    for later in order[x + 1 :]
                ):
                    continue
                state = model.init()
                for _, _, op in order:
                    legal, state = model.step(state, op)
                    if not legal:
                        break
                else:
                    return True
    return False


@st.composite
def small_history(draw: st.DrawFn, model: str) -> list[Op]:
    """Up to 5 operations by up to 3 processes over two values, many info outcomes."""
    values = ["a", "b"] if model == "kv" else [1, 2]
    ops: list[Op] = []
    busy: dict[int, Op] = {}
    for _ in range(draw(st.integers(1, 5))):
        free = [p for p in range(3) if p not in busy]
        if busy and (not free or draw(st.booleans())):
            p = draw(st.sampled_from(sorted(busy)))
            inv = busy.pop(p)
            kind = draw(st.sampled_from(["ok", "ok", "info", "fail"]))
            value = inv.value
            if inv.f in ("get", "read") and kind == "ok":
                value = draw(st.sampled_from([None, *values]))
            ops.append(Op(p, kind, inv.f, inv.key, value))
            continue
        p = draw(st.sampled_from(free))
        if model == "kv":
            f = draw(st.sampled_from(["get", "put", "append", "cas"]))
        else:
            f = draw(st.sampled_from(["read", "write", "cas"]))
        key = "k" if model == "kv" else None
        value: Any = None
        if f == "cas":
            value = (draw(st.sampled_from([None, *values])), draw(st.sampled_from(values)))
        elif f not in ("get", "read"):
            value = draw(st.sampled_from(values))
        inv = Op(p, "invoke", f, key, value)
        busy[p] = inv
        ops.append(inv)
    for p, inv in busy.items():
        if draw(st.booleans()):
            value = inv.value if inv.f not in ("get", "read") else draw(st.sampled_from(values))
            ops.append(Op(p, draw(st.sampled_from(["ok", "info"])), inv.f, inv.key, value))
    return ops


@pytest.mark.parametrize("model", ["register", "kv"])
@settings(max_examples=300, deadline=None)
@given(data=st.data(), budget=st.sampled_from([None, 1, 3, 10]))
def test_pruned_search_agrees_with_brute_force(model: str, data: Any, budget: int | None) -> None:
    ops = data.draw(small_history(model))
    expected = brute(ops, model)
    assert check_history(ops, model).linearizable is expected
    # a budget may make it unknown, never wrong
    assert check_history(ops, model, memo_budget=budget).linearizable in (None, expected)


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def exit_code(argv: list[str]) -> int:
    """``main``'s return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize(
    "args", [["--clients", "0"], ["--ops", "0"], ["--keys", "0"], ["--clients", "1", "--partition"]]
)
def test_bench_check_refuses_empty_runs(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["bench", "check", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0]
    assert "Traceback" not in captured.err


def test_bench_check_partition_reports_both_histories() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None, force_terminal=False)
    report = run_bench_check(
        n_ops=300, n_clients=50, n_keys=6, rounds=1, partition=True, as_json=True, console=console
    )
    assert json.loads(buffer.getvalue()) == report
    names = [h["name"] for h in report["histories"]]
    assert names == ["partition, linearizable", "partition, stale reads of key 0"]
    verdicts = [h["linearizable"] for h in report["histories"]]
    assert verdicts == [True, False]
    assert report["histories"][1]["reason"].startswith("key 0: ")
    assert all(h["peak_traced_mib"] > 0 for h in report["histories"])
    assert report["max_rss_mib"] > 0
    with pytest.raises(ValueError):
        run_bench_check(n_ops=0, console=console)


def test_check_command_reports_budget_unknown_and_progress_lines(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.jsonl"
    dump_history_jsonl(partitioned(0, stale=True), path)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None, force_terminal=False)
    assert run_check([str(path)], "kv", None, True, console=console, memo_budget=1) == 3
    record = json.loads(buffer.getvalue())
    assert record["linearizable"] is None
    assert "memo budget" in record["reason"]
    assert exit_code(["check", str(path), "--json", "--memo-budget", "0"]) == 2
    capsys.readouterr()
    assert exit_code(["check", str(path), "--json", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["reason"].startswith("key 2: ")


def test_report_without_exact_search_is_maximal(monkeypatch: pytest.MonkeyPatch) -> None:
    import ruflo_consensus.check.linearizability as lin

    monkeypatch.setattr(lin, "_REPORT_BUDGET", 1)
    result = check_history(partitioned(3, stale=True), "kv")
    failure = result.failure
    assert failure is not None and failure.key == 2
    assert failure.longest is False
    model = get_model("kv")
    state = model.init()
    for op in failure.prefix:
        legal, state = model.step(state, op)
        assert legal
    assert state == failure.state
    # maximal: nothing that could come next is legal from the reported state
    assert failure.blocking in failure.window
    assert not any(model.step(failure.state, op)[0] for op in failure.window)
