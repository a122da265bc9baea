"""Shared helpers for the storage tests (plus tests of the SimDisk model itself)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ruflo_consensus.core.base import Entry, HardState, Persist, Proposal, Snapshot
from ruflo_consensus.storage import (
    FileStorage,
    MemoryStorage,
    OsFileSystem,
    RaftStorage,
    SimDisk,
    StoredState,
)
from ruflo_consensus.storage.fs import FileSystem

Op = Persist | Snapshot


def entries(first: int, n: int, term: int, tag: str = "x") -> list[Entry]:
    """``n`` entries from index ``first``; every 4th one has no proposal (a no-op)."""
    out = []
    for i in range(first, first + n):
        if i % 4 == 0:
            out.append(Entry(term, i, None))
        else:
            cmd: dict[str, Any] = {"op": "put", "key": f"{tag}{i}", "value": "v" * (i % 7)}
            out.append(Entry(term, i, Proposal("c1" if i % 2 else None, i, cmd)))
    return out


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    """A snapshot with a fixed membership."""
    return Snapshot(index, term, ("a", "b", "c"), ("d",), data + str(index).encode())


def apply_op(storage: RaftStorage, op: Op) -> None:
    """Run one scripted operation."""
    if isinstance(op, Snapshot):
        storage.save_snapshot(op)
    else:
        storage.save(op)


def script() -> list[Op]:
    """A sequence that truncates, re-appends, snapshots twice, and changes every field."""
    return [
        Persist(hard_state=HardState(1, None, 0)),
        Persist(hard_state=HardState(1, "a", 0), truncate_from=1, entries=entries(1, 3, 1)),
        Persist(truncate_from=4, entries=entries(4, 3, 1)),
        Persist(hard_state=HardState(2, "b", 3), truncate_from=5, entries=entries(5, 3, 2, "y")),
        Persist(state=b"doc-1"),
        snap(4, 1),
        Persist(truncate_from=8, entries=entries(8, 5, 2)),
        Persist(hard_state=HardState(2, "b", 8)),
        Persist(truncate_from=11, entries=entries(11, 3, 3, "z")),
        snap(10, 3),
        Persist(truncate_from=14, entries=entries(14, 7, 3)),
        Persist(hard_state=HardState(3, "c", 20), state=b"doc-2", entries=entries(21, 2, 3)),
    ]


def model_states(ops: Sequence[Op]) -> list[StoredState]:
    """``out[k]`` is the state after the first ``k`` operations (by MemoryStorage)."""
    mem = MemoryStorage()
    out = [mem.load()]
    for op in ops:
        apply_op(mem, op)
        out.append(mem.load())
    return out


def same(a: StoredState, b: StoredState) -> bool:
    """Field-by-field equality (entries compared as lists)."""
    return (
        a.hard_state == b.hard_state
        and a.snapshot == b.snapshot
        and list(a.entries) == list(b.entries)
        and a.state == b.state
    )


def describe(s: StoredState) -> str:
    """A short summary for assertion messages."""
    first = s.entries[0].index if s.entries else None
    last = s.entries[-1].index if s.entries else None
    snap_at = None if s.snapshot is None else (s.snapshot.index, s.snapshot.term)
    return f"hs={s.hard_state} snap={snap_at} entries={first}..{last} state={s.state!r}"


@dataclass
class Disk:
    """A place to open FileStorage: a real directory or a SimDisk, and how to "crash" it."""

    kind: str  # "os" or "sim"
    directory: str
    fs: FileSystem

    def open(self, **kw: Any) -> FileStorage:
        """Open a FileStorage on this disk."""
        return FileStorage(self.directory, fs=self.fs, **kw)

    def crash(self, mode: str, rng: random.Random | None = None) -> None:
        """``keep``: the OS wrote everything back; ``drop``: unsynced bytes lost;
        ``random`` (SimDisk only): per file none/all/a prefix of the unsynced bytes."""
        if mode == "keep":
            return
        if isinstance(self.fs, SimDisk):
            self.fs.crash(rng if mode == "random" else None)
        elif isinstance(self.fs, OsFileSystem):
            assert mode == "drop"
            self.fs.drop_unsynced()


def make_disk(kind: str, tmp_path: Path) -> Disk:
    """A fresh disk of ``kind`` ("os" or "sim")."""
    if kind == "os":
        return Disk("os", str(tmp_path / "node"), OsFileSystem())
    return Disk("sim", "/node", SimDisk())


StorageFactory = Callable[[], RaftStorage]


# ----------------------------------------------------------------------------- SimDisk model


def test_simdisk_unsynced_bytes_are_lost_on_crash() -> None:
    disk = SimDisk()
    disk.makedirs("/d")
    f = disk.open_append("/d/a")
    f.write(b"hello")
    f.sync()
    disk.sync_dir("/d")
    f.write(b" world")
    report = disk.crash()
    assert disk.read_bytes("/d/a") == b"hello"
    assert report.lost == {"/d/a": 6}


def test_simdisk_names_need_a_directory_sync() -> None:
    disk = SimDisk()
    disk.makedirs("/d")
    f = disk.open_append("/d/new")
    f.write(b"x")
    f.sync()  # data synced, but the name was never made durable
    report = disk.crash()
    assert not disk.exists("/d/new")
    assert report.vanished == ["/d/new"]


def test_simdisk_rename_is_durable_only_after_dir_sync() -> None:
    disk = SimDisk()
    disk.makedirs("/d")
    disk.write_bytes("/d/tmp", b"new")
    disk.rename("/d/tmp", "/d/final")
    disk.crash()
    assert disk.exists("/d/tmp") and not disk.exists("/d/final")
    disk.rename("/d/tmp", "/d/final")
    disk.sync_dir("/d")
    disk.crash()
    assert disk.listdir("/d") == ["final"]


def test_simdisk_crash_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> tuple[bytes, ...]:
        disk = SimDisk()
        disk.makedirs("/d")
        for name in ("a", "b", "c"):
            f = disk.open_append(f"/d/{name}")
            f.write(b"synced-")
            f.sync()
            f.write(bytes(range(200)))
        disk.sync_dir("/d")
        disk.crash(random.Random(seed))
        return tuple(disk.read_bytes(f"/d/{n}") for n in ("a", "b", "c"))

    assert run(7) == run(7)
    assert len({run(s) for s in range(10)}) > 1


def test_simdisk_fail_next_operations() -> None:
    disk = SimDisk()
    disk.makedirs("/d")
    disk.write_bytes("/d/a", b"abc")
    disk.fail_next_open()
    with pytest.raises(OSError):
        disk.open_read("/d/a")
    f = disk.open_append("/d/a")
    disk.fail_next_write()
    with pytest.raises(OSError):
        f.write(b"zzz")
    assert disk.read_bytes("/d/a") == b"abc"
    disk.fail_next_sync()
    with pytest.raises(OSError):
        f.sync()
    r = disk.open_read("/d/a")
    disk.fail_next_read()
    with pytest.raises(OSError):
        r.read(1)
    assert r.read(10) == b"abc"
