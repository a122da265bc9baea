"""Crash FileStorage at every write point of a scripted run and check what reopening gives.

For each :class:`WritePoint` and each time the script reaches it, the storage "dies"
there (``SimulatedCrash``); then the disk keeps everything, or loses every unsynced byte,
or (SimDisk) loses a random part of them. Reopening must give exactly the state after
all operations that returned, plus the crashing operation either fully or not at all —
and the storage must then carry on (the node rejoins) to the same final state.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ruflo_consensus.core.base import HardState, Persist
from ruflo_consensus.storage import (
    FaultPlan,
    FileStorage,
    RecordingHook,
    SimDisk,
    SimulatedCrash,
    StorageClosedError,
    WritePoint,
)
from ruflo_consensus.storage.faults import TEAR_POINTS
from tests.helpers.storage_support import (
    apply_op,
    describe,
    entries,
    make_disk,
    model_states,
    same,
    script,
)

SEGMENT_BYTES = 350
# bytes of the torn write that reach the file: inside the header, exactly the header,
# half (None), all but the last byte (-1)
TEARS = [1, 9, None, -1]
OS_TEARS = [9, None]


def _count_points() -> dict[WritePoint, int]:
    hook = RecordingHook()
    s = FileStorage("/n", fs=SimDisk(), segment_bytes=SEGMENT_BYTES, faults=hook)
    for op in script():
        apply_op(s, op)
    return dict(hook.counts)


COUNTS = _count_points()


def _cases(tear_sizes: list[int | None]) -> list[object]:
    cases: list[object] = []
    for point, n in sorted(COUNTS.items()):
        for occurrence in range(1, n + 1):
            tears = tear_sizes if point in TEAR_POINTS else [None]
            for tear in tears:
                label = f"{point.value}#{occurrence}" + (
                    f"-tear{tear}" if point in TEAR_POINTS else ""
                )
                cases.append(pytest.param(point, occurrence, tear, id=label))
    return cases


def test_the_script_reaches_every_kind_of_write_point() -> None:
    expected = set(WritePoint) - {WritePoint.RECOVER_BEFORE_TRUNCATE}
    assert set(COUNTS) == expected
    assert COUNTS[WritePoint.WAL_AFTER_SYNC] == len(script())  # one record per operation
    assert COUNTS[WritePoint.SEGMENT_BEFORE_CREATE] >= 3
    assert COUNTS[WritePoint.COMPACT_BEFORE_DELETE] >= 2


def expected_outcome(point: WritePoint, mode: str) -> str:
    """Whether the crashing operation must be present, absent, or may be either."""
    if point in (WritePoint.WAL_AFTER_SYNC, WritePoint.COMPACT_BEFORE_DELETE):
        return "present"  # durable before the crash
    if point is WritePoint.WAL_AFTER_WRITE:
        return {"keep": "present", "drop": "absent"}.get(mode, "either")
    return "absent"  # the operation's record never fully reached the file


def run_crash_case(
    kind: str, mode: str, point: WritePoint, occurrence: int, tear: int | None, tmp_path: Path
) -> None:
    ops = script()
    states = model_states(ops)
    disk = make_disk(kind, tmp_path)
    plan = FaultPlan(point, occurrence, tear)
    storage = disk.open(segment_bytes=SEGMENT_BYTES, faults=plan)
    crashed: int | None = None
    for k, op in enumerate(ops):
        try:
            apply_op(storage, op)
        except SimulatedCrash:
            crashed = k
            break
    assert plan.fired and crashed is not None
    with pytest.raises(StorageClosedError):
        storage.save(Persist(hard_state=HardState(99, None, 0)))

    disk.crash(mode, random.Random(occurrence * 1000 + (tear or 0)))
    reopened = disk.open(segment_bytes=SEGMENT_BYTES)
    got = reopened.load()
    before, after = states[crashed], states[crashed + 1]
    outcome = expected_outcome(point, mode)
    if same(got, before):
        assert outcome != "present", f"op {crashed} was durable but is gone: {describe(got)}"
        resume = crashed
    else:
        assert outcome != "absent", f"op {crashed} never returned nor synced: {describe(got)}"
        assert same(got, after), (
            f"crash in op {crashed}: got {describe(got)}; "
            f"expected {describe(before)} or {describe(after)}"
        )
        resume = crashed + 1
    # the node goes on from what it found, and a later restart sees everything
    for op in ops[resume:]:
        apply_op(reopened, op)
    reopened.close()
    final = disk.open(segment_bytes=SEGMENT_BYTES).load()
    assert same(final, states[-1]), describe(final)


@pytest.mark.parametrize(("point", "occurrence", "tear"), _cases(TEARS))
@pytest.mark.parametrize("mode", ["keep", "drop", "random"])
def test_crash_on_simdisk(
    point: WritePoint, occurrence: int, tear: int | None, mode: str, tmp_path: Path
) -> None:
    run_crash_case("sim", mode, point, occurrence, tear, tmp_path)


@pytest.mark.parametrize(("point", "occurrence", "tear"), _cases(OS_TEARS))
@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_crash_on_os_files(
    point: WritePoint, occurrence: int, tear: int | None, mode: str, tmp_path: Path
) -> None:
    run_crash_case("os", mode, point, occurrence, tear, tmp_path)


@pytest.mark.parametrize("kind", ["sim", "os"])
def test_crash_while_recovery_truncates_a_torn_tail(kind: str, tmp_path: Path) -> None:
    disk = make_disk(kind, tmp_path)
    s = disk.open()
    s.save(Persist(entries=entries(1, 5, 1)))
    s.close()
    s = disk.open(faults=FaultPlan(WritePoint.WAL_MID_RECORD, 1, 7))
    with pytest.raises(SimulatedCrash):
        s.save(Persist(entries=entries(6, 5, 1)))
    with pytest.raises(SimulatedCrash):
        disk.open(faults=FaultPlan(WritePoint.RECOVER_BEFORE_TRUNCATE))
    s = disk.open()
    assert s.recovery.truncated and s.recovery.truncated[0][2] == 7
    assert s.load().entries == entries(1, 5, 1)
    s.save(Persist(entries=entries(6, 1, 1)))
    s.close()
    assert disk.open().load().entries == entries(1, 6, 1)
