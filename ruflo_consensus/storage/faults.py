"""Crash injection for :class:`~ruflo_consensus.storage.file.FileStorage`.

``FileStorage`` announces every point where a crash changes what is on disk (a
:class:`WritePoint`) to an injected :class:`FaultHook`. The hook either lets it go on, or
raises :class:`SimulatedCrash`; at a *tear* point it may instead ask for only a prefix of
the bytes to be written before the crash (a torn write). After a simulated crash the
storage object is dead; the test or simulator then decides what the disk kept (see
:meth:`~ruflo_consensus.storage.simdisk.SimDisk.crash` and
:meth:`~ruflo_consensus.storage.fs.OsFileSystem.drop_unsynced`) and opens the directory
again, which runs the same recovery as after a real power loss.

Nothing here is random unless a ``random.Random`` is passed in.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from typing import Protocol

__all__ = [
    "TEAR_POINTS",
    "FaultHook",
    "FaultPlan",
    "RandomFaults",
    "RecordingHook",
    "SimulatedCrash",
    "WritePoint",
]


class SimulatedCrash(Exception):
    """Raised by a fault hook: the process "died" at ``point``; the storage is unusable."""

    def __init__(self, point: WritePoint, detail: str = "") -> None:
        super().__init__(f"simulated crash at {point.value}{': ' + detail if detail else ''}")
        self.point = point


class WritePoint(enum.StrEnum):
    """The places where a crash leaves a different disk behind.

    ``wal-*`` fire once per non-empty ``save()`` and once per snapshot marker; ``segment-*``
    when a new WAL segment is started; ``snap-*`` while a snapshot file is written;
    ``compact-before-delete`` before each file removal after a snapshot;
    ``recover-before-truncate`` when opening cuts off a torn tail.
    """

    WAL_BEFORE_WRITE = "wal-before-write"
    WAL_MID_RECORD = "wal-mid-record"  # tear point
    WAL_AFTER_WRITE = "wal-after-write"  # written, not yet fsynced
    WAL_AFTER_SYNC = "wal-after-sync"  # durable, save() has not returned yet
    SEGMENT_BEFORE_CREATE = "segment-before-create"
    SEGMENT_MID_HEAD = "segment-mid-head"  # tear point
    SEGMENT_AFTER_HEAD = "segment-after-head"  # head written, not yet fsynced
    SEGMENT_BEFORE_DIR_SYNC = "segment-before-dir-sync"
    SNAP_BEFORE_WRITE = "snap-before-write"
    SNAP_MID_WRITE = "snap-mid-write"  # tear point
    SNAP_BEFORE_SYNC = "snap-before-sync"
    SNAP_BEFORE_RENAME = "snap-before-rename"
    SNAP_BEFORE_DIR_SYNC = "snap-before-dir-sync"
    COMPACT_BEFORE_DELETE = "compact-before-delete"
    RECOVER_BEFORE_TRUNCATE = "recover-before-truncate"


TEAR_POINTS = frozenset(
    {WritePoint.WAL_MID_RECORD, WritePoint.SEGMENT_MID_HEAD, WritePoint.SNAP_MID_WRITE}
)
"""Points where :meth:`FaultHook.tear` is asked instead of :meth:`FaultHook.reached`."""


class FaultHook(Protocol):
    """What ``FileStorage`` calls at each :class:`WritePoint`."""

    def reached(self, point: WritePoint) -> None:
        """Called at a non-tear point; raise :class:`SimulatedCrash` to crash there."""
        ...

    def tear(self, point: WritePoint, size: int) -> int | None:
        """Called before writing ``size`` bytes; return ``k`` (0 ≤ k < size) to write
        only the first ``k`` bytes and then crash, or ``None`` to write them all."""
        ...


class FaultPlan:
    """Crash the ``occurrence``-th time (1-based) ``point`` is reached.

    At a tear point, ``tear_bytes`` bytes of the write reach the file first (default: half
    of it; a negative value counts from the end, ``-1`` = all but the last byte; clamped to
    ``[0, size - 1]``). ``fired`` tells whether the crash happened.
    """

    def __init__(
        self, point: WritePoint, occurrence: int = 1, tear_bytes: int | None = None
    ) -> None:
        if occurrence < 1:
            raise ValueError("occurrence is 1-based")
        self.point = point
        self.occurrence = occurrence
        self.tear_bytes = tear_bytes
        self.seen = 0
        self.fired = False

    def _hit(self, point: WritePoint) -> bool:
        if point is not self.point or self.fired:
            return False
        self.seen += 1
        if self.seen == self.occurrence:
            self.fired = True
            return True
        return False

    def reached(self, point: WritePoint) -> None:
        """Raise :class:`SimulatedCrash` on the planned occurrence of the planned point."""
        if self._hit(point):
            raise SimulatedCrash(point)

    def tear(self, point: WritePoint, size: int) -> int | None:
        """Return the torn length on the planned occurrence, else ``None``."""
        if not self._hit(point):
            return None
        k = size // 2 if self.tear_bytes is None else self.tear_bytes
        if k < 0:
            k += size
        return max(0, min(k, size - 1))


class RecordingHook:
    """Never crashes; counts how often each point was reached (to enumerate crash plans)."""

    def __init__(self) -> None:
        self.counts: Counter[WritePoint] = Counter()
        self.order: list[WritePoint] = []

    def reached(self, point: WritePoint) -> None:
        """Count ``point``."""
        self.counts[point] += 1
        self.order.append(point)

    def tear(self, point: WritePoint, size: int) -> int | None:
        """Count ``point``; never tear."""
        self.reached(point)
        return None


class RandomFaults:
    """Crash at any point with probability ``p``, tearing writes at a random length.

    All randomness comes from ``rng``, so a seeded ``random.Random`` replays the same
    crash. After firing once it stays quiet (the storage is dead anyway).
    """

    def __init__(self, rng: random.Random, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be a probability")
        self.rng = rng
        self.p = p
        self.fired: WritePoint | None = None

    def reached(self, point: WritePoint) -> None:
        """Raise :class:`SimulatedCrash` with probability ``p``."""
        if self.fired is None and self.rng.random() < self.p:
            self.fired = point
            raise SimulatedCrash(point)

    def tear(self, point: WritePoint, size: int) -> int | None:
        """With probability ``p`` return a random prefix length in ``[0, size)``."""
        if self.fired is None and size > 0 and self.rng.random() < self.p:
            self.fired = point
            return self.rng.randrange(size)
        return None
