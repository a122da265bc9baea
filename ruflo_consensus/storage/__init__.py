"""Durable storage for consensus cores: hard state, snapshot, and the log after it.

* :class:`MemoryStorage` — in memory, for tests and the simulator.
* :class:`FileStorage` — a CRC'd, segmented, fsynced WAL plus snapshot files; runs on the
  OS (:class:`OsFileSystem`) or on a crash-modelling :class:`SimDisk`.
* :class:`FaultPlan` / :class:`RandomFaults` crash a ``FileStorage`` at a chosen
  :class:`WritePoint` (raising :class:`SimulatedCrash`).
* :func:`bench_reopen` measures writing and reopening a large log.

``docs/storage.md`` describes the format, the recovery rules and the fsync ordering.
"""

from __future__ import annotations

from .base import (
    CorruptLogError,
    CorruptSnapshotError,
    MissingSnapshotError,
    RaftStorage,
    SnapshotError,
    StorageClosedError,
    StorageError,
    StorageIOError,
    StorageLockedError,
    StoredState,
)
from .bench import bench_reopen
from .faults import FaultHook, FaultPlan, RandomFaults, RecordingHook, SimulatedCrash, WritePoint
from .file import FileStorage, RecoveryReport
from .fs import FileSystem, OsFileSystem
from .memory import MemoryStorage
from .simdisk import CrashReport, SimDisk

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "CrashReport",
    "FaultHook",
    "FaultPlan",
    "FileStorage",
    "FileSystem",
    "MemoryStorage",
    "MissingSnapshotError",
    "OsFileSystem",
    "RaftStorage",
    "RandomFaults",
    "RecordingHook",
    "RecoveryReport",
    "SimDisk",
    "SimulatedCrash",
    "SnapshotError",
    "StorageClosedError",
    "StorageError",
    "StorageIOError",
    "StorageLockedError",
    "StoredState",
    "WritePoint",
    "bench_reopen",
]
