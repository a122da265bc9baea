"""What the Raft core and the simulator need from storage: snapshots inside a Persist,
write()/sync() with group commit, and a reopen that decodes only the log after the snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ruflo_consensus.core.base import HardState, Persist
from ruflo_consensus.storage import (
    FaultPlan,
    FileStorage,
    MemoryStorage,
    SimDisk,
    SimulatedCrash,
    WritePoint,
    bench_reopen,
)
from ruflo_consensus.storage import file as file_module
from ruflo_consensus.storage.wal import RecordType, SegmentReader, segment_name
from tests.helpers.storage_support import entries, snap


def _both() -> list[object]:
    return [
        pytest.param(lambda: MemoryStorage(), id="memory"),
        pytest.param(lambda: FileStorage("/n", fs=SimDisk()), id="file"),
    ]


@pytest.mark.parametrize("make", _both())
def test_a_persist_with_a_snapshot_installs_it_then_truncates_and_appends(make: object) -> None:
    s = make()  # type: ignore[operator]
    s.save(Persist(hard_state=HardState(1, "a", 3), entries=entries(1, 12, 1)))
    # a follower installs a snapshot at 8 from a leader whose log differs after it
    s.save(
        Persist(
            snapshot=snap(8, 2),
            truncate_from=9,
            entries=entries(9, 2, 2, "new"),
            hard_state=HardState(2, None, 8),
        )
    )
    got = s.load()
    assert got.snapshot == snap(8, 2)
    assert got.entries == entries(9, 2, 2, "new")
    assert got.hard_state == HardState(2, None, 8)
    # entries the snapshot covers are skipped, an older snapshot is refused (nothing changes)
    s.save(Persist(entries=entries(5, 7, 2, "new")[-1:]))
    with pytest.raises(ValueError, match="older"):
        s.save(Persist(snapshot=snap(4, 1), hard_state=HardState(9, None, 0)))
    assert s.load().hard_state == HardState(2, None, 8)


def test_an_installed_snapshot_and_its_truncation_are_one_record() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist(entries=entries(1, 12, 1)))
    s.save(Persist(snapshot=snap(8, 2), truncate_from=9, hard_state=HardState(2, None, 8)))
    s.close()
    path = f"/n/{segment_name(0)}"
    data = disk.read_bytes(path)

    class _F:
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int) -> bytes:
            out = data[self.pos : self.pos + n]
            self.pos += len(out)
            return out

        def seek(self, o: int) -> None:
            self.pos = o

        def close(self) -> None:
            pass

    types = [t for _o, t, _p in SegmentReader(_F(), len(data))]
    assert types[-1] == RecordType.BATCH  # marker + truncation + hard state together
    assert FileStorage("/n", fs=disk).load().entries == []


def test_write_is_durable_only_after_sync_and_one_sync_covers_many_writes() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist(entries=entries(1, 3, 1)))
    syncs = disk.syncs
    for first in (4, 7, 10):
        s.write(Persist(entries=entries(first, 3, 1)))
    assert s.unsynced and disk.syncs == syncs
    assert s.load().entries == entries(1, 12, 1)  # visible before it is durable
    s.sync()
    assert disk.syncs == syncs + 1 and not s.unsynced
    s.write(Persist(entries=entries(13, 2, 1)))
    disk.crash()  # power cut before the sync: the last write is gone, the rest stays
    assert FileStorage("/n", fs=disk).load().entries == entries(1, 12, 1)


def test_rotation_syncs_the_full_segment_before_starting_the_next() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk, segment_bytes=200)
    for first in range(1, 40, 3):
        s.write(Persist(entries=entries(first, 3, 1)))
    assert len(s.segments) > 2
    disk.crash()  # only the tail of the last segment was unsynced
    got = FileStorage("/n", fs=disk, segment_bytes=200).load().entries
    assert got and got == entries(1, len(got), 1)
    assert len(got) >= 39 - 12  # whole earlier segments survived


def test_segments_are_deleted_only_after_the_marker_is_synced() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk, segment_bytes=200)
    for first in range(1, 40, 3):
        s.save(Persist(entries=entries(first, 3, 1)))
    before = list(s.segments)
    s.write(Persist(snapshot=snap(30, 1)))
    assert s.segments == before  # not yet: the marker is not durable
    disk.crash()  # lose the marker: the old segments are still all there
    reopened = FileStorage("/n", fs=disk, segment_bytes=200)
    assert reopened.load().snapshot is None and len(reopened.segments) == len(before)
    reopened.write(Persist(snapshot=snap(30, 1)))
    reopened.sync()
    assert len(reopened.segments) < len(before)
    assert FileStorage("/n", fs=disk).load().snapshot == snap(30, 1)


def test_a_crash_between_write_and_sync_at_the_fault_point() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk, faults=FaultPlan(WritePoint.WAL_AFTER_SYNC, 2))
    s.save(Persist(entries=entries(1, 2, 1)))
    s.write(Persist(entries=entries(3, 2, 1)))
    with pytest.raises(SimulatedCrash):
        s.sync()  # the fsync happened, the process died right after it
    disk.crash()
    assert FileStorage("/n", fs=disk).load().entries == entries(1, 4, 1)


def test_reopening_decodes_only_the_entries_after_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    for first in range(1, 1001, 100):
        s.save(Persist(entries=entries(first, 100, 1), hard_state=HardState(1, "a", first)))
    s.save_snapshot(snap(950, 1))
    s.close()
    decoded: list[int] = []
    real = file_module.read_entry_items

    def counting(u: object, first: int, count: int) -> object:
        decoded.append(count)
        return real(u, first, count)  # type: ignore[arg-type]

    monkeypatch.setattr(file_module, "read_entry_items", counting)
    got = FileStorage("/n", fs=disk).load()
    assert [e.index for e in got.entries] == list(range(951, 1001))
    assert sum(decoded) == 50  # not the 950 the snapshot covers
    decoded.clear()
    again = FileStorage("/n", fs=disk)
    again.load()
    assert again.load().entries == got.entries  # a rescan after the first load
    assert sum(decoded) == 100


def test_bench_reopen_with_snapshots_loads_only_the_tail(tmp_path: Path) -> None:
    result = bench_reopen(
        tmp_path / "b",
        entries=30_000,
        batch=1000,
        fsync=False,
        trace=False,
        snapshot_every=8_000,
        snapshot_bytes=4096,
    )
    assert result["snapshots"] == 3 and result["snapshot_index"] == 24_000
    assert result["entries_loaded"] == 6_000 and result["last_index"] == 30_000
    with pytest.raises(ValueError, match="negative"):
        bench_reopen(tmp_path / "c", entries=10, snapshot_every=-1)
