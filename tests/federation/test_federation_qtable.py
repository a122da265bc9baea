"""Shared Q-table: TD numbers, epsilon decay, bounded states, annoy lookup, CRDT form."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.federation.qtable import (
    DEFAULT_AGENT_TYPES,
    MergeableQTable,
    QConfig,
    QTable,
    epsilon_at,
    state_key,
    task_embedding,
)
from ruflo_consensus.statemachine import CommandError


def rejected(machine: Any, command: Any, code: str) -> None:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before


def upd(
    q: QTable, state: str, action: Any, reward: float, nxt: str | None = None, **kw: Any
) -> Any:
    cmd = {"op": "qtable.update", "state": state, "action": action, "reward": reward, "now": 1}
    return q.apply({**cmd, "next_state": nxt, **kw})


def unit(i: int, dim: int = 64) -> list[float]:
    v = [0.0] * dim
    v[i] = 1.0
    return v


def test_defaults_are_the_spec() -> None:
    cfg = QConfig()
    assert cfg.actions == DEFAULT_AGENT_TYPES and len(cfg.actions) == 8
    assert cfg.actions[:3] == ("coder", "tester", "reviewer")
    assert (cfg.alpha, cfg.gamma, cfg.max_states, cfg.evict_to) == (0.1, 0.99, 10_000, 0.8)
    assert epsilon_at(0, cfg) == 1.0
    assert epsilon_at(5_000, cfg) == pytest.approx(0.505)
    assert epsilon_at(10_000, cfg) == pytest.approx(0.01)
    assert epsilon_at(50_000, cfg) == pytest.approx(0.01)


def test_td_update_numbers() -> None:
    q = QTable()
    assert upd(q, "s1", "coder", 1.0)["q"] == pytest.approx(0.1)  # 0 + 0.1 * (1 - 0)
    assert upd(q, "s1", "coder", 1.0)["q"] == pytest.approx(0.19)  # 0.1 + 0.1 * (1 - 0.1)
    # Q(s0, tester) = 0 + 0.1 * (0.5 + 0.99 * max Q(s1) - 0) = 0.1 * (0.5 + 0.99 * 0.19)
    assert upd(q, "s0", 1, 0.5, "s1")["q"] == pytest.approx(0.06881)
    # An unknown next state counts as 0 and is not created.
    assert upd(q, "s2", "debugger", -1.0, "never-seen")["q"] == pytest.approx(-0.1)
    assert "never-seen" not in q
    assert q.q_values("s0").tolist() == pytest.approx([0, 0.06881, 0, 0, 0, 0, 0, 0])
    assert q.steps == 4 and q.epsilon() == pytest.approx(1.0 - 0.99 * 4 / 10_000)


def test_configurable_actions() -> None:
    q = QTable(QConfig(actions=("a", "b", "c")))
    upd(q, "s", "c", 1.0)
    assert q.q_values("s").tolist() == pytest.approx([0, 0, 0.1])
    bad = {"op": "update", "state": "s", "action": "coder", "reward": 0, "now": 1}
    rejected(q, bad, "BAD_ARGUMENT")
    with pytest.raises(ValueError):
        QConfig(actions=("a", "a"))


def test_eviction_drops_least_recently_updated_to_80_percent() -> None:
    q = QTable(QConfig(max_states=10))
    for i in range(10):
        upd(q, f"s{i}", "coder", 0.5)
    upd(q, "s0", "tester", 0.5)  # s0 is now the most recently updated
    result = upd(q, "s10", "coder", 0.5)
    assert result["evicted"] == 2  # 10 -> 8, then the new state: 9
    assert q.states() == sorted(["s0", *[f"s{i}" for i in range(3, 11)]])
    assert q.q_values("s1").tolist() == [0.0] * 8


def test_epsilon_greedy_selection_is_seeded() -> None:
    q = QTable()
    upd(q, "s", "reviewer", 1.0)
    assert q.select("s", random.Random(1), epsilon=0.0) == "reviewer"
    picks = [q.select("s", random.Random(7), epsilon=1.0) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same choice
    rng_a, rng_b = random.Random(42), random.Random(42)
    seq_a = [q.select("s", rng_a, epsilon=0.5) for _ in range(50)]
    seq_b = [q.select("s", rng_b, epsilon=0.5) for _ in range(50)]
    assert seq_a == seq_b
    assert 0 < seq_a.count("reviewer") < 50  # both exploring and exploiting happened
    assert q.select("unseen", random.Random(0), epsilon=0.0) == "coder"  # ties: lowest index


def test_nearest_neighbour_lookup_with_annoy() -> None:
    q = QTable()
    for i in range(20):
        upd(q, f"s{i:02d}", "coder", 0.1, embedding=unit(i))
    probe = np.array(unit(7), dtype=np.float32)
    probe[8] = 0.2
    near = q.nearest(probe, k=2)
    assert [k for k, _ in near] == ["s07", "s08"]
    assert near[0][1] < near[1][1]
    other = QTable()
    other.restore(q.snapshot())  # the index is not in the snapshot; it is rebuilt
    assert other.nearest(probe, k=5) == q.nearest(probe, k=5)
    with pytest.raises(ValueError):
        q.nearest([1.0, 2.0])


def test_suggest_for_an_unseen_task_uses_its_neighbours() -> None:
    q = QTable()
    for i in range(6):
        upd(q, f"s{i}", "tester" if i < 3 else "coder", 1.0, embedding=unit(i))
    probe = np.zeros(64, dtype=np.float32)
    probe[0:3] = 1.0
    action, candidates = q.suggest(probe, random.Random(0), k=3, epsilon=0.0)
    assert action == "tester"
    assert sorted(k for k, _ in candidates) == ["s0", "s1", "s2"]
    assert QTable().suggest(probe, random.Random(0), epsilon=0.0)[1] == []


def test_task_embedding_and_state_key_are_stable() -> None:
    a = task_embedding("Write unit tests for the parser")
    b = task_embedding("write UNIT tests, for the parser!")
    assert a.shape == (64,) and a.dtype == np.float32
    assert np.allclose(a, b) and float(np.linalg.norm(a)) == pytest.approx(1.0)
    assert state_key(a) == state_key(b)
    assert state_key(a) != state_key(task_embedding("design the storage architecture"))
    key = state_key(a)
    assert key[0] == "s" and len(key) == 17 and int(key[1:], 16) >= 0
    assert not task_embedding("...").any()


@pytest.mark.parametrize(
    "command",
    [
        {"op": "update", "state": "s", "action": "coder", "reward": 1.5, "now": 1},
        {"op": "update", "state": "s", "action": "coder", "reward": float("nan"), "now": 1},
        {"op": "update", "state": "s", "action": "pilot", "reward": 0.1, "now": 1},
        {"op": "update", "state": "s", "action": 8, "reward": 0.1, "now": 1},
        {"op": "update", "state": "s", "action": True, "reward": 0.1, "now": 1},
        {"op": "update", "state": "", "action": 0, "reward": 0.1, "now": 1},
        {
            "op": "update",
            "state": "s",
            "action": 0,
            "reward": 0.1,
            "embedding": [1.0] * 63,
            "now": 1,
        },
        {
            "op": "update",
            "state": "s",
            "action": 0,
            "reward": 0.1,
            "embedding": b"\x00" * 7,
            "now": 1,
        },
        {"op": "update", "state": "s", "action": 0, "reward": 0.1, "alpha": 1.0, "now": 1},
        {"op": "update", "state": "s", "action": 0, "reward": 0.1, "now": "today"},
    ],
)
def test_bad_updates_leave_state_byte_identical(command: dict[str, Any]) -> None:
    q = QTable()
    upd(q, "s", "coder", 0.3, embedding=unit(1))
    rejected(q, command, "BAD_ARGUMENT")


def test_snapshot_is_canonical_and_restorable() -> None:
    q = QTable(QConfig(max_states=5))
    for i in range(12):
        upd(q, f"s{i % 7}", i % 8, (i % 5) / 5 - 0.4, f"s{(i + 1) % 7}", embedding=unit(i))
    other = QTable()
    other.restore(q.snapshot())
    assert other.snapshot() == q.snapshot()
    assert other.config == q.config and len(other) == len(q) <= 5
    for s in q.states():
        assert other.q_values(s).tolist() == q.q_values(s).tolist()
    # Continuing on both gives the same state again.
    upd(q, "new", 3, 0.9, "s1")
    upd(other, "new", 3, 0.9, "s1")
    assert other.snapshot() == q.snapshot()


# ------------------------------------------------------------ CRDT form


def test_mergeable_table_sums_node_deltas() -> None:
    a, b = MergeableQTable(), MergeableQTable()
    a.apply({"op": "update", "node": "A", "state": "s", "action": "coder", "reward": 1.0})
    b.apply({"op": "update", "node": "B", "state": "s", "action": "coder", "reward": 1.0})
    a.apply({"op": "merge", "state": b.snapshot()})
    b.apply({"op": "merge", "state": a.snapshot()})
    assert a.snapshot() == b.snapshot()
    assert a.q_values("s")[0] == pytest.approx(0.2)  # both nodes' 0.1 deltas
    counts = {n: c[0] for n, (c, _) in a.entries["s"].items()}
    assert counts == {"A": 1, "B": 1}


_update = st.tuples(
    st.sampled_from(["A", "B", "C"]),
    st.sampled_from(["s0", "s1", "s2"]),
    st.integers(0, 7),
    st.floats(-1, 1),
    st.one_of(st.none(), st.sampled_from(["s0", "s1", "s2"])),
)


@settings(max_examples=40, deadline=None)
@given(
    updates=st.lists(st.tuples(st.integers(0, 2), _update), max_size=25),
    order=st.permutations([0, 1, 2]),
)
def test_mergeable_replicas_converge_in_any_merge_order(
    updates: list[tuple[int, tuple[str, str, int, float, str | None]]], order: list[int]
) -> None:
    replicas = [MergeableQTable() for _ in range(3)]
    for r, (node, state, action, reward, nxt) in updates:
        replicas[r].update(f"{node}{r}", state, action, reward, nxt)
    forward = MergeableQTable()
    for r in range(3):
        forward.merge(replicas[r])
    shuffled = MergeableQTable()
    for r in order:
        shuffled.merge(replicas[r])
        shuffled.merge(replicas[r])  # idempotent
    assert forward.snapshot() == shuffled.snapshot()
    pairwise = MergeableQTable()
    pairwise.merge(replicas[order[0]])
    tail = MergeableQTable()
    tail.merge(replicas[order[1]])
    tail.merge(replicas[order[2]])
    pairwise.merge(tail)  # associativity
    assert pairwise.snapshot() == forward.snapshot()


def test_mergeable_rejects_bad_input() -> None:
    m = MergeableQTable()
    m.update("A", "s", 0, 0.5, None)
    rejected(m, {"op": "update", "state": "s", "action": 0, "reward": 0.5}, "BAD_ARGUMENT")
    rejected(m, {"op": "merge", "state": b"garbage"}, "BAD_SNAPSHOT")
    rejected(m, {"op": "merge", "state": "x"}, "BAD_ARGUMENT")
    rejected(m, {"op": "evict", "node": "A"}, "UNKNOWN_OP")
