"""Hypothesis properties of the CRDT core: order, duplication and causality do not matter.

Random edits on several source replicas produce a set of delta updates (the ones the
sources gossip). Fresh replicas receive that set in any permutation, with duplicates, and
must all end in the same state as a replica that received it in generation order — equal
application value, state vector and document fingerprint — and that state must follow the
merge rules (the LWW winner is the greatest (hlc, node) write; counters are exact sums).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc

from ruflo_consensus.check.convergence import AckedWrite, check_acknowledged_writes
from ruflo_consensus.core.base import Proposal
from ruflo_consensus.core.crdt import CrdtConfig, CrdtCore, CrdtUpdate, encode_state_vector
from ruflo_consensus.crdt_machines import CrdtKV, EditContext, HlcTimestamp, HybridLogicalClock
from ruflo_consensus.statemachine import CommandError

SOURCES = ["s1", "s2", "s3"]
SINK = "sink"
PEERS = [*SOURCES, SINK, "r1", "r2", "r3"]
CONFIG = CrdtConfig(gossip_fanout=1, anti_entropy=False)

KEYS = ["a", "b", "c"]
EMPTY = encode_state_vector({})


class SharedList:
    """A test machine on a Y Array: inserts by several replicas depend on each other's items.

    It exercises causality across Yjs clients (an insert's neighbours may be another
    replica's items), which the KV machine's per-node entries never need.
    """

    def __init__(self) -> None:
        self.items: Array[Any] | None = None

    def bind(self, doc: Doc[Any]) -> None:
        self.items = doc.get("list", type=Array)

    def apply(self, command: Any, ctx: EditContext) -> Any:
        assert self.items is not None
        if command["op"] == "insert":
            pos = command["pos"] % (len(self.items) + 1)
            self.items.insert(pos, f"{ctx.node_id}:{command['value']}")
            return None
        if command["op"] == "remove":
            if len(self.items) == 0:
                raise CommandError("EMPTY", "nothing to remove")
            del self.items[command["pos"] % len(self.items)]
            return None
        raise CommandError("UNKNOWN_OP", command["op"])

    def value(self) -> Any:
        assert self.items is not None
        return list(self.items.to_py() or [])


@dataclass
class Generated:
    updates: list[tuple[bytes, bytes]] = field(default_factory=list)
    writes: list[AckedWrite] = field(default_factory=list)


def make_core(node: str, machine: Any, seed: int = 0) -> CrdtCore:
    neighbours = [SINK] if node in SOURCES else []
    return CrdtCore(node, PEERS, neighbours, random.Random(seed), machine, CONFIG)


def generate(steps: list[tuple[Any, ...]], machine_factory: Any) -> Generated:
    """Run ``steps`` on the sources; collect every delta they gossip and every write."""
    sources = {s: make_core(s, machine_factory()) for s in SOURCES}
    out = Generated()
    for step in steps:
        kind = step[0]
        if kind == "tick":
            for _ in range(step[2]):
                sources[step[1]].tick()
            continue
        if kind == "sync":  # one source merges another's whole state: cross-client causality
            a, b = step[1], step[2]
            if a != b:
                sources[b].step(CrdtUpdate(a, b, sources[a].encoded_state(), 1, EMPTY))
                sources[b].ready()
            continue
        node, command = step[1], step[2]
        core = sources[node]
        core.propose(Proposal(None, 1, command))
        rd = core.ready()
        out.updates += [(m.update, m.base) for m in rd.messages if isinstance(m, CrdtUpdate)]
        result = rd.results[0].value
        if command["op"] in ("put", "delete") and isinstance(result, list):
            ts = HlcTimestamp.from_wire(result)
            out.writes.append(
                AckedWrite(node, command["op"], command["key"], command.get("value"), ts=ts)
            )
        elif command["op"] == "incr" and isinstance(result, int):
            out.writes.append(AckedWrite(node, "incr", command["key"], amount=command["amount"]))
    return out


def deliver(
    node: str, machine: Any, updates: list[tuple[bytes, bytes]], order: list[int]
) -> CrdtCore:
    core = make_core(node, machine)
    feed(core, updates, order)
    return core


def feed(core: CrdtCore, updates: list[tuple[bytes, bytes]], order: list[int]) -> None:
    for i in order:
        update, base = updates[i]
        core.step(CrdtUpdate(SOURCES[0], core.node_id, update, 1, base))


source = st.sampled_from(SOURCES)
kv_command = st.one_of(
    st.builds(
        lambda k, v: {"op": "put", "key": k, "value": v},
        st.sampled_from(KEYS),
        st.text("xyz", max_size=3),
    ),
    st.builds(lambda k: {"op": "delete", "key": k}, st.sampled_from(KEYS)),
    st.builds(
        lambda k, n: {"op": "incr", "key": k, "amount": n},
        st.sampled_from(KEYS),
        st.integers(-5, 10),
    ),
)
kv_steps = st.lists(
    st.one_of(
        st.tuples(st.just("op"), source, kv_command),
        st.tuples(st.just("tick"), source, st.integers(1, 5)),
        st.tuples(st.just("sync"), source, source),
    ),
    min_size=1,
    max_size=25,
)
list_command = st.one_of(
    st.builds(
        lambda p, v: {"op": "insert", "pos": p, "value": v},
        st.integers(0, 20),
        st.integers(0, 99),
    ),
    st.builds(lambda p: {"op": "remove", "pos": p}, st.integers(0, 20)),
)
list_steps = st.lists(
    st.one_of(
        st.tuples(st.just("op"), source, list_command),
        st.tuples(st.just("sync"), source, source),
    ),
    min_size=1,
    max_size=25,
)


def shuffled_with_duplicates(data: st.DataObject, n: int) -> list[int]:
    order = data.draw(st.permutations(range(n)))
    extra = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n)) if n else []
    result = list(order)
    for i in extra:
        result.insert(data.draw(st.integers(0, len(result))), i)
    return result


def assert_same_state(cores: list[CrdtCore]) -> None:
    ref = cores[0]
    assert all(core.buffered == 0 for core in cores)
    for core in cores[1:]:
        assert core.value() == ref.value()
        assert core.state_vector() == ref.state_vector()
        assert core.fingerprint() == ref.fingerprint()


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(steps=kv_steps, data=st.data())
def test_kv_updates_in_any_order_with_duplicates_converge(
    steps: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    gen = generate(steps, CrdtKV)
    n = len(gen.updates)
    reference = deliver("r1", CrdtKV(), gen.updates, list(range(n)))
    others = [
        deliver(f"r{i}", CrdtKV(), gen.updates, shuffled_with_duplicates(data, n)) for i in (2, 3)
    ]
    assert_same_state([reference, *others])
    final = reference.value()
    # the merge rules hold: greatest (hlc, node) write wins, counters are exact sums
    assert check_acknowledged_writes(gen.writes, final) == []
    for key in KEYS:
        registers = [w for w in gen.writes if w.key == key and w.op != "incr"]
        if registers:
            latest = max(registers, key=lambda w: w.ts or HlcTimestamp(0, 0, ""))
            assert final["kv"][key]["value"] == latest.value
        else:
            assert key not in final["kv"]
        total = sum(w.amount for w in gen.writes if w.key == key and w.op == "incr")
        assert final["counters"].get(key, {"total": 0})["total"] == total


@PROPERTY
@given(steps=list_steps, data=st.data())
def test_causally_dependent_updates_in_any_order_converge(
    steps: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    gen = generate(steps, SharedList)
    n = len(gen.updates)
    reference = deliver("r1", SharedList(), gen.updates, list(range(n)))
    other = deliver("r2", SharedList(), gen.updates, shuffled_with_duplicates(data, n))
    assert_same_state([reference, other])


@PROPERTY
@given(steps=kv_steps, data=st.data())
def test_restoring_persisted_state_midway_changes_nothing(
    steps: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    gen = generate(steps, CrdtKV)
    n = len(gen.updates)
    order = shuffled_with_duplicates(data, n)
    cut = data.draw(st.integers(0, len(order)))
    first = deliver("r1", CrdtKV(), gen.updates, order[:cut])
    restarted = CrdtCore("r1", PEERS, [], random.Random(1), CrdtKV(), CONFIG, first.encoded_state())
    feed(restarted, gen.updates, order[cut:])
    # Updates parked (not yet applied) at the crash are gone with the process; anti-entropy
    # would bring them back — here, one more delivery of everything stands in for it.
    feed(restarted, gen.updates, list(range(n)))
    assert restarted.buffered == 0
    reference = deliver("r2", CrdtKV(), gen.updates, list(range(n)))
    assert restarted.value() == reference.value()
    assert restarted.state_vector() == reference.state_vector()


OVERWRITES = [
    {"op": "put", "key": "a", "value": "1"},
    {"op": "put", "key": "b", "value": "2"},
    {"op": "put", "key": "a", "value": "3"},
    {"op": "incr", "key": "a", "amount": 4},
]


def test_every_delivery_order_of_overwrites_converges() -> None:
    # Each write also overwrites the writer's entry of the ruflo.hlc map: the pattern that
    # raw pycrdt 0.14 loses when later updates arrive first (see the next test).
    gen = generate([("op", "s1", c) for c in OVERWRITES], CrdtKV)
    assert len(gen.updates) == len(OVERWRITES)
    reference = deliver("r1", CrdtKV(), gen.updates, [0, 1, 2, 3])
    for order in itertools.permutations(range(4)):
        assert_same_state([reference, deliver("r2", CrdtKV(), gen.updates, list(order))])


@pytest.mark.xfail(strict=False, reason="Yrs parking bug in pycrdt 0.14: why updates carry a base")
def test_raw_pycrdt_out_of_order_overwrites_converge() -> None:
    gen = generate([("op", "s1", c) for c in OVERWRITES], CrdtKV)
    states = set()
    for order in itertools.permutations(range(4)):
        doc: Doc[Any] = Doc(client_id=1)
        for i in order:
            doc.apply_update(gen.updates[i][0])  # straight into Yrs, no causal gate
        states.add(doc.get_state())
    assert len(states) == 1


@given(
    events=st.lists(
        st.one_of(
            st.tuples(st.just("now"), st.integers(0, 1000)),
            st.tuples(st.just("update"), st.integers(0, 1000), st.integers(0, 50)),
        ),
        max_size=60,
    )
)
def test_hlc_timestamps_strictly_increase_past_everything_observed(
    events: list[tuple[Any, ...]],
) -> None:
    clock = HybridLogicalClock("n1")
    last: tuple[int, int] = (0, 0)
    for event in events:
        if event[0] == "now":
            ts = clock.now(event[1])
            assert (ts.physical, ts.logical) > last
            assert ts.physical >= event[1]
            last = (ts.physical, ts.logical)
        else:
            clock.update((event[1], event[2]))
            last = max(last, (event[1], event[2]))
