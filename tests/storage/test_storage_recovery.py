"""Opening a damaged directory: torn tails are cut off, anything else is a typed error."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from ruflo_consensus.core.base import HardState, Persist
from ruflo_consensus.storage import (
    CorruptLogError,
    CorruptSnapshotError,
    FaultPlan,
    FileStorage,
    MissingSnapshotError,
    OsFileSystem,
    SimDisk,
    SimulatedCrash,
    StorageClosedError,
    StorageError,
    StorageIOError,
    WritePoint,
)
from ruflo_consensus.storage.fs import ReadFile
from ruflo_consensus.storage.wal import (
    HEADER_SIZE,
    RecordType,
    SegmentReader,
    encode_record,
    segment_name,
    snapshot_name,
)
from tests.helpers.storage_support import entries, snap


def records(path: Path) -> list[tuple[int, int]]:
    """``(offset, total length)`` of each record of a segment file."""
    fs = OsFileSystem()
    reader = SegmentReader(fs.open_read(str(path)), fs.size(str(path)))
    out = [(off, HEADER_SIZE + len(payload)) for off, _t, payload in reader]
    assert reader.bad is None
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def five_saves(d: Path, **kw: object) -> FileStorage:
    s = FileStorage(d, **kw)  # type: ignore[arg-type]
    for i in range(1, 6):
        s.save(Persist(hard_state=HardState(1, "a", i - 1), entries=entries(i * 3 - 2, 3, 1)))
    s.close()
    return s


def seg0(d: Path) -> Path:
    return d / segment_name(0)


# ----------------------------------------------------------------------------- torn tails


@pytest.mark.parametrize(
    "damage",
    ["partial-header", "partial-payload", "crc-at-end", "zeros", "type-at-end", "length-at-end"],
)
def test_a_torn_tail_is_truncated_to_the_last_good_record(damage: str, tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d)
    path = seg0(d)
    recs = records(path)
    last_off, last_len = recs[-1]
    size = path.stat().st_size
    lost_last = True
    if damage == "partial-header":
        with path.open("ab") as f:
            f.write(b"\x10\x00\x00")
        lost_last = False
    elif damage == "partial-payload":
        os.truncate(path, last_off + HEADER_SIZE + 3)
    elif damage == "crc-at-end":
        flip(path, last_off + last_len - 1)
    elif damage == "zeros":
        with path.open("ab") as f:
            f.write(bytes(4096))
        lost_last = False
    elif damage == "type-at-end":
        flip(path, last_off + 8)
    elif damage == "length-at-end":
        flip(path, last_off + 3)  # length becomes huge: looks like a partial payload
    cut = last_off if lost_last else size

    s = FileStorage(d)
    ((tpath, toff, dropped, reason),) = s.recovery.truncated
    assert (tpath, toff) == (str(path), cut) and dropped > 0 and reason
    assert path.stat().st_size == cut
    state = s.load()
    assert state.entries == entries(1, 12 if lost_last else 15, 1)
    assert state.hard_state == HardState(1, "a", 3 if lost_last else 4)
    # the repaired log takes new writes, and a second open finds nothing to repair
    s.save(Persist(truncate_from=13, entries=entries(13, 1, 2)))
    s.close()
    again = FileStorage(d)
    assert again.recovery.truncated == []
    assert again.load().entries == entries(1, 12, 1) + entries(13, 1, 2)


def test_a_torn_head_of_a_new_segment_removes_the_segment(tmp_path: Path) -> None:
    d = tmp_path / "n"
    s = FileStorage(d, segment_bytes=200, faults=FaultPlan(WritePoint.SEGMENT_MID_HEAD, 2, 5))
    with pytest.raises(SimulatedCrash):
        for i in range(1, 40):
            s.save(Persist(entries=entries(i, 1, 1)))
    assert (d / segment_name(1)).stat().st_size == 5
    s = FileStorage(d, segment_bytes=200)
    assert str(d / segment_name(1)) in s.recovery.removed
    n = len(s.load().entries)
    s.save(Persist(entries=entries(n + 1, 1, 1)))
    s.close()
    assert FileStorage(d).load().entries == entries(1, n + 1, 1)


# ----------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("where", ["payload", "crc", "type", "length"])
def test_corruption_in_the_middle_names_file_and_offset(where: str, tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d)
    path = seg0(d)
    off, length = records(path)[2]
    at = {"payload": off + length - 2, "crc": off + 5, "type": off + 8, "length": off + 2}[where]
    flip(path, at)
    size = path.stat().st_size
    with pytest.raises(CorruptLogError) as info:
        FileStorage(d)
    err = info.value
    assert err.path == str(path) and err.offset == off
    assert str(path) in str(err) and f"offset {off}" in str(err)
    assert path.stat().st_size == size, "a corrupt log must not be 'repaired'"


def test_corruption_at_the_end_of_a_non_last_segment_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d, segment_bytes=150)
    assert (d / segment_name(2)).exists()
    path = d / segment_name(1)
    off, length = records(path)[-1]
    flip(path, off + length - 1)
    with pytest.raises(CorruptLogError) as info:
        FileStorage(d, segment_bytes=150)
    assert (info.value.path, info.value.offset) == (str(path), off)
    assert "not the last segment" in info.value.reason


def test_a_missing_segment_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d, segment_bytes=150)
    os.remove(d / segment_name(1))
    with pytest.raises(CorruptLogError, match=segment_name(1) + " is missing") as info:
        FileStorage(d)
    assert info.value.path == str(d / segment_name(2))


def test_an_empty_segment_that_is_not_the_last_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d, segment_bytes=150)
    os.truncate(d / segment_name(1), 0)
    with pytest.raises(CorruptLogError, match="empty segment"):
        FileStorage(d)


def test_a_record_with_a_good_crc_but_a_bad_shape_is_an_error_even_at_the_end(
    tmp_path: Path,
) -> None:
    d = tmp_path / "n"
    five_saves(d)
    path = seg0(d)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(encode_record(RecordType.HARD_STATE, {"not": "a hard state"}))
    with pytest.raises(CorruptLogError) as info:
        FileStorage(d)
    assert info.value.offset == size and "hard state" in info.value.reason


def test_a_segment_head_that_disagrees_with_the_log_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d, segment_bytes=150)
    # replace segment 2's head by one claiming another last index
    path = d / segment_name(2)
    _off, length = records(path)[0]
    rest = path.read_bytes()[length:]
    head = encode_record(RecordType.SEGMENT_HEAD, [2, [1, "a", 0], None, 999, None])
    path.write_bytes(head + rest)
    with pytest.raises(CorruptLogError, match="disagrees") as info:
        FileStorage(d)
    assert (info.value.path, info.value.offset) == (str(path), 0)


# ----------------------------------------------------------------------------- snapshots


def snapshotted(d: Path) -> Path:
    s = FileStorage(d)
    s.save(Persist(entries=entries(1, 10, 1)))
    s.save_snapshot(snap(6, 1))
    s.close()
    return d / snapshot_name(6, 1)


def test_a_missing_snapshot_file_is_a_typed_error(tmp_path: Path) -> None:
    path = snapshotted(tmp_path / "n")
    os.remove(path)
    with pytest.raises(MissingSnapshotError) as info:
        FileStorage(tmp_path / "n")
    assert info.value.path == str(path)
    assert isinstance(info.value, StorageError)


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "other-snapshot"])
def test_a_corrupt_snapshot_file_is_a_typed_error(damage: str, tmp_path: Path) -> None:
    path = snapshotted(tmp_path / "n")
    if damage == "flip":
        flip(path, path.stat().st_size - 3)
    elif damage == "truncate":
        os.truncate(path, path.stat().st_size - 1)
    elif damage == "magic":
        flip(path, 0)
    else:
        other = tmp_path / "other"
        s = FileStorage(other)
        s.save_snapshot(snap(9, 2))
        s.close()
        path.write_bytes((other / snapshot_name(9, 2)).read_bytes())
    with pytest.raises(CorruptSnapshotError) as info:
        FileStorage(tmp_path / "n")
    assert info.value.path == str(path)


def test_leftover_snapshot_files_are_removed_on_open(tmp_path: Path) -> None:
    d = tmp_path / "n"
    snapshotted(d)
    (d / (snapshot_name(8, 1) + ".tmp")).write_bytes(b"half")
    (d / snapshot_name(9, 1)).write_bytes(b"never referenced")
    s = FileStorage(d)
    assert sorted(Path(p).name for p in s.recovery.removed) == [
        snapshot_name(8, 1) + ".tmp",
        snapshot_name(9, 1),
    ]
    assert s.load().snapshot == snap(6, 1)


# ----------------------------------------------------------------------------- I/O errors


def test_a_read_error_on_open_names_the_file_simdisk() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist(entries=entries(1, 3, 1)))
    s.close()
    disk.fail_next_open()
    with pytest.raises(StorageIOError) as info:
        FileStorage("/n", fs=disk)
    assert info.value.path == "/n/" + segment_name(0) and info.value.op == "open"
    disk.fail_next_read()
    with pytest.raises(StorageIOError) as info:
        FileStorage("/n", fs=disk)
    assert info.value.path == "/n/" + segment_name(0) and info.value.op == "read"
    assert FileStorage("/n", fs=disk).load().entries == entries(1, 3, 1)


class _FailingReads(OsFileSystem):
    def open_read(self, path: str) -> ReadFile:
        raise OSError(errno.EIO, "Input/output error", path)


def test_a_read_error_on_open_names_the_file_os(tmp_path: Path) -> None:
    d = tmp_path / "n"
    five_saves(d)
    with pytest.raises(StorageIOError) as info:
        FileStorage(d, fs=_FailingReads())
    assert info.value.path == str(seg0(d))
    assert str(seg0(d)) in str(info.value)


def test_a_failed_write_poisons_the_storage_until_reopened() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist(entries=entries(1, 3, 1)))
    disk.fail_next_write()
    with pytest.raises(StorageIOError) as info:
        s.save(Persist(entries=entries(4, 1, 1)))
    assert info.value.op == "write"
    with pytest.raises(StorageClosedError):
        s.save(Persist(entries=entries(4, 1, 1)))
    s = FileStorage("/n", fs=disk)
    assert s.load().entries == entries(1, 3, 1)


def test_a_failed_fsync_is_never_reported_as_durable() -> None:
    disk = SimDisk()
    s = FileStorage("/n", fs=disk)
    s.save(Persist(entries=entries(1, 3, 1)))
    disk.fail_next_sync()
    with pytest.raises(StorageIOError) as info:
        s.save(Persist(entries=entries(4, 1, 1)))
    assert info.value.op == "fsync"
    with pytest.raises(StorageClosedError):
        s.save_snapshot(snap(2, 1))
    disk.crash()  # the page cache is gone: so is the unsynced record
    assert FileStorage("/n", fs=disk).load().entries == entries(1, 3, 1)


def test_wal_header_layout_is_documented_one() -> None:
    rec = encode_record(RecordType.HARD_STATE, [1, "a", 0])
    length, _crc, rtype = struct.unpack_from("<IIB", rec)
    assert length == len(rec) - 9 and rtype == RecordType.HARD_STATE
