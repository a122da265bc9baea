"""One writer per storage directory: the flock on ``<dir>/LOCK``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ruflo_consensus.core.base import Entry, HardState, Persist
from ruflo_consensus.storage import (
    CorruptLogError,
    FaultPlan,
    FileStorage,
    SimDisk,
    SimulatedCrash,
    StorageError,
    StorageLockedError,
    WritePoint,
)
from ruflo_consensus.storage.wal import parse_segment_name

HOLD = """
import sys
from ruflo_consensus.storage import FileStorage
s = FileStorage(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


def _entries(n: int) -> tuple[Entry, ...]:
    return tuple(Entry(1, i, None) for i in range(1, n + 1))


def test_a_second_open_in_the_same_process_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    first = FileStorage(tmp_path)
    first.save(Persist(hard_state=HardState(3, "n2", 0), entries=_entries(4)))
    files = sorted(os.listdir(tmp_path))
    with pytest.raises(StorageLockedError) as exc:
        FileStorage(tmp_path)
    assert isinstance(exc.value, StorageError)
    assert exc.value.directory == str(tmp_path)
    assert exc.value.holder == f"pid {os.getpid()}"
    assert str(tmp_path) in str(exc.value)
    assert sorted(os.listdir(tmp_path)) == files  # the refused open touched nothing
    first.save(Persist(entries=(Entry(1, 5, None),)))  # the holder still writes
    first.close()
    reopened = FileStorage(tmp_path)  # closing released it
    stored = reopened.load()
    assert stored.hard_state == HardState(3, "n2", 0) and len(stored.entries) == 5
    reopened.close()


def test_another_process_is_kept_out_until_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StorageLockedError) as exc:
            FileStorage(tmp_path)
        assert exc.value.holder == f"pid {holder.pid}"
    finally:
        holder.send_signal(signal.SIGKILL)  # no close(): the kernel drops the lock
        holder.wait()
    FileStorage(tmp_path).close()


def test_an_open_that_fails_recovery_leaves_the_directory_unlocked(tmp_path: Path) -> None:
    s = FileStorage(tmp_path, segment_bytes=64)
    for i in range(1, 30):
        s.save(Persist(entries=(Entry(1, i, None),)))
    s.close()
    segments = sorted(n for n in os.listdir(tmp_path) if parse_segment_name(n) is not None)
    assert len(segments) >= 3
    os.remove(tmp_path / segments[1])  # a gap in the middle: recovery must refuse it
    for _ in range(2):  # the failed open released the lock: the second fails the same way
        with pytest.raises(CorruptLogError):
            FileStorage(tmp_path)


def test_a_crashed_storage_releases_the_lock_as_a_dead_process_would(tmp_path: Path) -> None:
    s = FileStorage(tmp_path, faults=FaultPlan(WritePoint.WAL_MID_RECORD, 1, 7))
    with pytest.raises(SimulatedCrash):
        s.save(Persist(entries=_entries(3)))
    FileStorage(tmp_path).close()


def test_a_simulated_disk_takes_no_lock() -> None:
    disk = SimDisk()
    first = FileStorage("/node", fs=disk)
    first.save(Persist(entries=_entries(2)))
    second = FileStorage("/node", fs=disk)  # a simulated restart reopens without closing
    assert len(second.load().entries) == 2
    assert "LOCK" not in disk.listdir("/node")


def test_a_second_node_process_on_the_same_data_directory_refuses_to_start(
    tmp_path: Path,
) -> None:
    from ruflo_consensus.runtime.localspec import write_local_spec

    spec = write_local_spec(tmp_path, "mesh", 3)
    node = [sys.executable, "-m", "ruflo_consensus.cli", "node", "--spec", str(spec), "--id", "n1"]
    first = subprocess.Popen(node, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        for line in first.stderr:  # wait until the first node has opened its storage
            if "listening" in line or "started" in line:
                break
        second = subprocess.run(node, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert "storage is locked by pid" in second.stderr
        assert first.poll() is None  # the running node was not disturbed
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)
