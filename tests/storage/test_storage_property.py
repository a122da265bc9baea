"""Property tests: FileStorage agrees with MemoryStorage, and survives random crashes."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruflo_consensus.core.base import Entry, HardState, Persist, Proposal, Snapshot
from ruflo_consensus.storage import (
    FileStorage,
    MemoryStorage,
    RandomFaults,
    SimDisk,
    SimulatedCrash,
    StoredState,
)
from tests.helpers.storage_support import Op, apply_op, describe, model_states, same

SEGMENT_BYTES = 300

# values msgpack gives back unchanged (no tuples, no NaN, 64-bit integers)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
commands = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def bounds(state: StoredState) -> tuple[int, int]:
    """(first index, last index) of a stored log."""
    first = 1 if state.snapshot is None else state.snapshot.index + 1
    return first, first - 1 + len(state.entries)


def draw_op(data: st.DataObject, state: StoredState) -> Op:
    first, last = bounds(state)
    if data.draw(st.integers(0, 4)) == 0:
        snap_index = first - 1
        index = data.draw(st.integers(snap_index, last + 3))
        return Snapshot(
            index,
            data.draw(st.integers(0, 5)),
            tuple(data.draw(st.lists(st.sampled_from("abcde"), max_size=3, unique=True))),
            (),
            data.draw(st.binary(max_size=16)),
        )
    trunc = data.draw(st.none() | st.integers(max(0, first - 2), last + 2))
    start = last + 1 if trunc is None or max(trunc, first) > last else max(trunc, first)
    if trunc is not None and trunc < first and data.draw(st.booleans()):
        start = max(1, trunc)  # also send entries the snapshot already covers
    n = data.draw(st.integers(0, 4))
    if start < first:
        n = max(n, first - start)
    term = data.draw(st.integers(0, 6))
    ents = []
    for i in range(start, start + n):
        if data.draw(st.booleans()):
            ents.append(Entry(term, i, None))
        else:
            client = data.draw(st.none() | st.sampled_from(["c1", "c2"]))
            ents.append(Entry(term, i, Proposal(client, i, data.draw(commands))))
    hs = data.draw(
        st.none()
        | st.builds(
            HardState,
            st.integers(0, 9),
            st.none() | st.sampled_from(["a", "b"]),
            st.integers(0, 50),
        )
    )
    blob = data.draw(st.none() | st.binary(max_size=12))
    return Persist(hard_state=hs, truncate_from=trunc, entries=ents, state=blob)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_file_and_memory_storage_load_the_same(data: st.DataObject) -> None:
    mem = MemoryStorage()
    disk = SimDisk()
    fil = FileStorage("/n", fs=disk, segment_bytes=SEGMENT_BYTES)
    for _ in range(data.draw(st.integers(1, 25))):
        if data.draw(st.integers(0, 6)) == 0:
            fil.close()
            fil = FileStorage("/n", fs=disk, segment_bytes=SEGMENT_BYTES)
        else:
            op = draw_op(data, mem.load())
            apply_op(mem, op)
            apply_op(fil, op)
        want, got = mem.load(), fil.load()
        assert same(got, want), f"{describe(got)} != {describe(want)}"
    fil.close()
    assert same(FileStorage("/n", fs=disk, segment_bytes=SEGMENT_BYTES).load(), mem.load())


# ----------------------------------------------------------------------------- random crashes


def random_ops(rng: random.Random, n: int) -> list[Op]:
    """A valid operation sequence drawn from ``rng``."""
    mem = MemoryStorage()
    ops: list[Op] = []
    for k in range(n):
        first, last = bounds(mem.load())
        op: Op
        if rng.random() < 0.15:
            op = Snapshot(rng.randint(first - 1, last + 1), k, ("a", "b"), (), rng.randbytes(20))
        else:
            trunc = rng.randint(first, last + 1) if rng.random() < 0.3 else None
            start = last + 1 if trunc is None else trunc
            count = rng.randint(0, 6)
            ents = [
                Entry(k, i, Proposal("c", i, {"op": "put", "key": f"k{i}", "value": "v" * k}))
                for i in range(start, start + count)
            ]
            hs = HardState(k, "a", max(0, start - 1)) if rng.random() < 0.6 else None
            blob = rng.randbytes(5) if rng.random() < 0.2 else None
            op = Persist(hard_state=hs, truncate_from=trunc, entries=ents, state=blob)
        apply_op(mem, op)
        ops.append(op)
    return ops


def crash_run(seed: int, n_ops: int = 30, p: float = 0.03) -> tuple[StoredState, list[str], Any]:
    """Run a random script on a SimDisk, crashing at random points (seeded) and recovering
    every time; check each recovery; return the final state, crash log and disk files."""
    rng = random.Random(seed)
    ops = random_ops(rng, n_ops)
    states = model_states(ops)
    disk = SimDisk()
    log: list[str] = []
    done = 0
    for _ in range(200):
        faults = RandomFaults(random.Random(rng.random()), p)
        try:
            storage = FileStorage("/n", fs=disk, segment_bytes=SEGMENT_BYTES, faults=faults)
            got = storage.load()
            if same(got, states[done]):
                pass
            else:
                assert done < len(ops) and same(got, states[done + 1]), (
                    f"seed {seed} after op {done}: {describe(got)}"
                )
                done += 1
            for op in ops[done:]:
                apply_op(storage, op)
                done += 1
            storage.close()
            break
        except SimulatedCrash as crash:
            log.append(f"op {done}: {crash.point.value}")
            report = disk.crash(random.Random(rng.random()))
            log.append(f"kept {sorted(report.kept.items())} lost {sorted(report.lost.items())}")
    final = FileStorage("/n", fs=disk, segment_bytes=SEGMENT_BYTES).load()
    assert same(final, states[-1]), describe(final)
    files = {name: disk.read_bytes("/n/" + name) for name in disk.listdir("/n")}
    return final, log, files


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_crashes_never_lose_a_returned_save(seed: int) -> None:
    crash_run(seed)


def test_simdisk_crash_runs_are_deterministic_for_a_seed() -> None:
    for seed in (1, 2, 3):
        a = crash_run(seed, p=0.08)
        b = crash_run(seed, p=0.08)
        assert a[1] == b[1] and a[2] == b[2]
        assert same(a[0], b[0])
    crashes = [crash_run(seed, p=0.08)[1] for seed in range(4)]
    assert any(crashes), "p=0.08 over 30 operations should crash at least once"
