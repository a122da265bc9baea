"""Round trips: MemoryStorage and FileStorage (on the OS and on a SimDisk) store the same."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ruflo_consensus.core.base import Entry, HardState, Persist, Proposal
from ruflo_consensus.storage import (
    FileStorage,
    MemoryStorage,
    RaftStorage,
    SimDisk,
    StorageClosedError,
)
from ruflo_consensus.storage.wal import parse_segment_name, parse_snapshot_name
from tests.helpers.storage_support import (
    apply_op,
    describe,
    entries,
    make_disk,
    model_states,
    same,
    script,
    snap,
)

KINDS = ["memory", "os", "sim"]


class Opened:
    """A storage under test that can be "restarted" (reopened) when it is file-backed."""

    def __init__(self, kind: str, tmp_path: Path, **kw: object) -> None:
        self.kind = kind
        self.kw = kw
        self.disk = None if kind == "memory" else make_disk(kind, tmp_path)
        self.storage: RaftStorage = self._open()

    def _open(self) -> RaftStorage:
        if self.disk is None:
            return MemoryStorage()
        return self.disk.open(**self.kw)

    def restart(self) -> RaftStorage:
        if self.disk is not None:
            self.storage.close()
            self.storage = self._open()
        return self.storage


@pytest.fixture(params=KINDS)
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    o = Opened(request.param, tmp_path, segment_bytes=512)
    yield o
    o.storage.close()


def test_empty_storage_loads_nothing(opened: Opened) -> None:
    state = opened.storage.load()
    assert state.hard_state is None and state.snapshot is None and state.entries == []
    assert state.state is None
    assert same(opened.restart().load(), state)


def test_entries_and_hard_state_round_trip(opened: Opened) -> None:
    s = opened.storage
    s.save(Persist(hard_state=HardState(1, "a", 0), truncate_from=1, entries=entries(1, 10, 1)))
    s.save(Persist(hard_state=HardState(1, "a", 7)))
    for state in (s.load(), opened.restart().load()):
        assert state.hard_state == HardState(1, "a", 7)
        assert state.entries == entries(1, 10, 1)


def test_truncation_then_reappend(opened: Opened) -> None:
    s = opened.storage
    s.save(Persist(entries=entries(1, 10, 1)))
    s.save(Persist(truncate_from=6, entries=entries(6, 2, 2, "new")))
    expected = entries(1, 5, 1) + entries(6, 2, 2, "new")
    assert s.load().entries == expected
    s = opened.restart()
    assert s.load().entries == expected
    s.save(Persist(truncate_from=3))  # truncate only
    s.save(Persist(entries=entries(3, 1, 3, "again")))
    expected = entries(1, 2, 1) + entries(3, 1, 3, "again")
    assert s.load().entries == expected
    assert opened.restart().load().entries == expected


def test_opaque_state_blob_round_trips(opened: Opened) -> None:
    s = opened.storage
    s.save(Persist(state=b"\x00doc-1"))
    s.save(Persist(hard_state=HardState(2, None, 0)))
    assert opened.restart().load().state == b"\x00doc-1"


def test_snapshot_compacts_and_keeps_later_entries(opened: Opened) -> None:
    s = opened.storage
    s.save(Persist(entries=entries(1, 30, 1)))
    s.save_snapshot(snap(12, 1))
    for state in (s.load(), opened.restart().load()):
        assert state.snapshot == snap(12, 1)
        assert state.entries == entries(13, 18, 1)
    s = opened.storage
    s.save(Persist(truncate_from=20, entries=entries(20, 3, 2)))
    s.save_snapshot(snap(40, 3))  # beyond the log: the log is emptied
    s.save(Persist(entries=entries(41, 2, 3)))
    state = opened.restart().load()
    assert state.snapshot == snap(40, 3)
    assert state.entries == entries(41, 2, 3)


def test_entries_covered_by_the_snapshot_are_skipped(opened: Opened) -> None:
    s = opened.storage
    s.save(Persist(entries=entries(1, 5, 1)))
    s.save_snapshot(snap(5, 1))
    # a late Persist that still carries covered entries: only the new ones are kept
    s.save(Persist(truncate_from=3, entries=entries(3, 5, 1)))
    assert opened.restart().load().entries == entries(6, 2, 1)


def test_invalid_saves_change_nothing(opened: Opened) -> None:
    s = opened.storage
    s.save(Persist(entries=entries(1, 3, 1)))
    with pytest.raises(ValueError, match="continue the log"):
        s.save(Persist(entries=entries(5, 1, 1)))  # gap
    with pytest.raises(ValueError, match="continue the log"):
        s.save(Persist(entries=entries(2, 1, 1)))  # overlap without truncation
    with pytest.raises(ValueError, match="consecutive"):
        s.save(Persist(entries=[*entries(4, 1, 1), *entries(6, 1, 1)]))
    s.save_snapshot(snap(2, 1))
    with pytest.raises(ValueError, match="older"):
        s.save_snapshot(snap(1, 1))
    state = opened.restart().load()
    assert state.entries == entries(3, 1, 1)
    assert state.snapshot == snap(2, 1)


def test_empty_persist_writes_nothing(tmp_path: Path) -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist())
    s.save(Persist(truncate_from=1))  # nothing to truncate
    assert disk.writes == 0 and disk.syncs == 0
    s.save(Persist(entries=entries(1, 1, 1)))
    assert disk.writes == 2  # the first segment's head, then the record


def test_one_save_is_one_write_and_one_fsync() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist(entries=entries(1, 1, 1)))  # starts the first segment too
    writes, syncs = disk.writes, disk.syncs
    for i in range(2, 12):
        s.save(Persist(hard_state=HardState(i, "a", i - 1), entries=entries(i, 1, 1), state=b"s"))
    assert disk.writes - writes == 10 and disk.syncs - syncs == 10


def test_closed_storage_refuses_calls(opened: Opened) -> None:
    opened.storage.close()
    with pytest.raises(StorageClosedError):
        opened.storage.save(Persist(hard_state=HardState(1, None, 0)))
    with pytest.raises(StorageClosedError):
        opened.storage.load()


def test_the_script_matches_the_model_after_every_step(opened: Opened) -> None:
    ops = script()
    states = model_states(ops)
    for k, op in enumerate(ops, start=1):
        apply_op(opened.storage, op)
        got = opened.storage.load()
        assert same(got, states[k]), f"step {k}: {describe(got)} != {describe(states[k])}"
        if k % 3 == 0:
            got = opened.restart().load()
            assert same(got, states[k]), f"reopen {k}: {describe(got)}"


def test_commands_round_trip_through_msgpack(tmp_path: Path) -> None:
    cmd = {"op": "multi", "items": [1, -2, 3.5, None, True, "é", b"\x00\xff"], "n": {"k": [1]}}
    s = FileStorage(tmp_path / "n")
    s.save(Persist(entries=[Entry(1, 1, Proposal("client-é", 2**40, cmd)), Entry(1, 2, None)]))
    s.close()
    got = FileStorage(tmp_path / "n").load().entries
    assert got == [Entry(1, 1, Proposal("client-é", 2**40, cmd)), Entry(1, 2, None)]


# ----------------------------------------------------------------------------- files on disk


def wal_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if parse_segment_name(n) is not None)


def snap_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if parse_snapshot_name(n) is not None)


def test_segments_rotate_and_snapshots_delete_covered_ones(tmp_path: Path) -> None:
    d = tmp_path / "n"
    s = FileStorage(d, segment_bytes=400)
    for i in range(1, 101, 5):
        s.save(Persist(hard_state=HardState(1, "a", i), entries=entries(i, 5, 1)))
    before = wal_files(d)
    assert len(before) > 5, "small segment_bytes must rotate"
    assert s.segments == [str(d / n) for n in before]
    s.save_snapshot(snap(50, 1))
    after = wal_files(d)
    # segments 0-2 hold entries 1..45 only; segment 3 holds 46..60 and stays
    assert after == before[3:], "exactly the covered prefix is deleted"
    assert snap_files(d) == [f"snap-{50:016x}-{1:016x}.snap"]
    s.save_snapshot(snap(100, 1))
    assert wal_files(d) == before[-1:], "the segment being appended to always stays"
    assert snap_files(d) == [f"snap-{100:016x}-{1:016x}.snap"]
    s.save(Persist(hard_state=HardState(2, "b", 100), entries=entries(101, 3, 2)))
    s.close()
    state = FileStorage(d, segment_bytes=400).load()
    assert state.snapshot == snap(100, 1)
    assert state.entries == entries(101, 3, 2)
    assert state.hard_state == HardState(2, "b", 100)


def test_a_segment_still_needed_is_never_deleted(tmp_path: Path) -> None:
    d = tmp_path / "n"
    s = FileStorage(d, segment_bytes=300)
    for i in range(1, 61, 3):
        s.save(Persist(entries=entries(i, 3, 1)))
    # a snapshot in the middle of the oldest live segment must not remove it
    s.save_snapshot(snap(2, 1))
    s.close()
    s2 = FileStorage(d, segment_bytes=300)
    assert s2.load().entries == entries(3, 58, 1)


def test_many_rotations_with_hard_state_only_in_old_segments(tmp_path: Path) -> None:
    # the hard state was last written long ago: segment heads must carry it forward
    d = tmp_path / "n"
    s = FileStorage(d, segment_bytes=200)
    s.save(Persist(hard_state=HardState(7, "x", 0), state=b"blob"))
    for i in range(1, 81, 2):
        s.save(Persist(entries=entries(i, 2, 7)))
    s.save_snapshot(snap(79, 7))
    s.close()
    assert len(wal_files(d)) <= 2
    state = FileStorage(d, segment_bytes=200).load()
    assert state.hard_state == HardState(7, "x", 0)
    assert state.state == b"blob"
    assert state.entries == entries(80, 1, 7)


def test_load_after_saves_rescans(tmp_path: Path) -> None:
    s = FileStorage(tmp_path / "n", segment_bytes=300)
    first = s.load()
    assert first.entries == []
    s.save(Persist(entries=entries(1, 20, 1)))
    s.save_snapshot(snap(5, 1))
    assert s.load().entries == entries(6, 15, 1)
    assert s.load().snapshot == snap(5, 1)


def test_both_storages_implement_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryStorage(), RaftStorage)
    assert isinstance(FileStorage(tmp_path / "n"), RaftStorage)
