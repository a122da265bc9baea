"""What every Raft storage stores, the contract it keeps, and its typed errors.

A storage keeps three things for one node: the **hard state** (term, vote, commit), the
latest **snapshot**, and the **log entries after that snapshot**. A core's
:class:`~ruflo_consensus.core.base.Persist` changes them; :meth:`RaftStorage.save` makes the
change durable before it returns, which is what lets a driver send the messages of the
same ``Ready`` afterwards.

The log rules live here, in :class:`LogState`, so that :class:`MemoryStorage` and
:class:`FileStorage` cannot drift apart: both normalise a ``Persist`` with
:meth:`LogState.plan` and apply it with :meth:`LogState.apply`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..core.base import Entry, HardState, Persist, Snapshot

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "LogState",
    "MissingSnapshotError",
    "PlannedWrite",
    "RaftStorage",
    "SnapshotError",
    "StorageClosedError",
    "StorageError",
    "StorageIOError",
    "StoredState",
]


# ----------------------------------------------------------------------------- errors


class StorageError(Exception):
    """Base of every error a storage raises about its own durable state."""


class CorruptLogError(StorageError):
    """A WAL record that cannot be trusted and cannot be a torn tail.

    ``path`` is the segment file, ``offset`` the byte offset of the bad record in it and
    ``reason`` a short human-readable cause. Recovery never skips such a record.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt WAL record at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class SnapshotError(StorageError):
    """The snapshot file the WAL refers to cannot be used."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class MissingSnapshotError(SnapshotError):
    """The WAL refers to a snapshot file that does not exist."""


class CorruptSnapshotError(SnapshotError):
    """A snapshot file exists but its magic, length, CRC or contents are wrong."""


class StorageIOError(StorageError):
    """The operating system (or simulated disk) failed an operation on ``path``.

    ``op`` names what was being done (``"read"``, ``"write"``, ``"fsync"``, …). After a failed
    write or fsync the storage refuses further writes: what reached the disk is unknown
    until the directory is opened again.
    """

    def __init__(self, path: str, op: str, cause: OSError) -> None:
        super().__init__(f"{path}: {op} failed: {cause}")
        self.path = path
        self.op = op
        self.cause = cause


class StorageLockedError(StorageError):
    """Another open :class:`~ruflo_consensus.storage.file.FileStorage` holds the directory.

    Two writers on one WAL would interleave records and corrupt it, so a second open —
    from another process, or from this one before the first was closed — is refused.
    ``directory`` is the directory; ``holder`` what the lock file says about its holder
    (``"pid 1234"``), or ``""`` when it says nothing readable.
    """

    def __init__(self, directory: str, holder: str) -> None:
        who = f" by {holder}" if holder else ""
        super().__init__(f"{directory}: storage is locked{who} (is another node running on it?)")
        self.directory = directory
        self.holder = holder


class StorageClosedError(StorageError):
    """The storage was closed, crashed, or failed a write; open it again to go on."""


# ----------------------------------------------------------------------------- contract


@dataclass(frozen=True)
class StoredState:
    """Everything a node gets back on restart.

    ``entries`` are the log entries after ``snapshot`` (or from index 1 without one),
    contiguous and in order. ``state`` is the last opaque ``Persist.state`` blob saved (the
    CRDT core's document, for instance), ``None`` if none was ever saved.
    """

    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: list[Entry]
    state: bytes | None = None


@runtime_checkable
class RaftStorage(Protocol):
    """The durable state of one node: hard state, snapshot, log after the snapshot."""

    def load(self) -> StoredState:
        """Return the stored state (what a restarted core is built from)."""
        ...

    def save(self, persist: Persist) -> None:
        """Store the snapshot, truncate, append, replace hard state/state; durable when this
        returns (:meth:`write` then :meth:`sync`)."""
        ...

    def write(self, persist: Persist) -> None:
        """Record ``persist`` as :meth:`save` does, but without waiting for the disk.

        It is visible to :meth:`load` at once and durable only after the next
        :meth:`sync`; a crash in between may lose it (whole: never half of it).
        """
        ...

    def sync(self) -> None:
        """Make every :meth:`write` so far durable (one fsync for all of them)."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot durably, then drop the entries it covers (index ≤ its index)."""
        ...

    def close(self) -> None:
        """Release files; later calls raise :class:`StorageClosedError`."""
        ...


# ----------------------------------------------------------------------------- log rules


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """A :class:`Persist` normalised against the current log, ready to record and apply.

    ``snapshot`` (when not None) is applied first; ``truncate_from`` is ``None`` when the
    truncation would remove nothing; ``entries`` holds only entries after the snapshot and
    continues the (truncated) log exactly.
    """

    truncate_from: int | None
    entries: list[Entry]
    hard_state: HardState | None
    state: bytes | None
    snapshot: Snapshot | None = None

    def is_empty(self) -> bool:
        """True when applying this changes nothing."""
        return (
            self.snapshot is None
            and self.truncate_from is None
            and not self.entries
            and self.hard_state is None
            and self.state is None
        )


@dataclass(slots=True)
class LogState:
    """The in-memory image of a storage's durable state, and the rules that change it.

    ``snapshot_index``/``snapshot_term`` are 0 without a snapshot; ``last_index`` is the
    index of the last entry (the snapshot's index when there is none after it). When
    ``entries`` is a list it holds the entries themselves (``entries[k]`` has index
    ``snapshot_index + 1 + k``); :class:`FileStorage` passes ``None`` and keeps only the
    bounds, since its entries live on disk.
    """

    hard_state: HardState | None = None
    snapshot_index: int = 0
    snapshot_term: int = 0
    last_index: int = 0
    state: bytes | None = None
    entries: list[Entry] | None = field(default_factory=list)

    @property
    def first_index(self) -> int:
        """Index the first stored entry has (or would have)."""
        return self.snapshot_index + 1

    def plan(self, persist: Persist) -> PlannedWrite:
        """Normalise ``persist`` against this log; raise ``ValueError`` if it cannot apply.

        Rules (the same for every storage):

        * ``snapshot`` (when set) comes first: it must not be older than the stored one,
          and it drops every entry with index ≤ its index (see :meth:`apply_snapshot`);
          the rules below then apply to the log as it is after it.
        * ``truncate_from`` below the first stored index is raised to it: entries the
          snapshot covers are already gone. A ``truncate_from`` past the last index removes
          nothing and is dropped.
        * Entries at or below the snapshot index are skipped (the snapshot covers them).
        * The remaining entries must have consecutive indices and start right after the
          last index left by the truncation; otherwise ``ValueError`` and nothing changes.
        """
        last = self.last_index
        snap_index = self.snapshot_index
        if persist.snapshot is not None:
            self.check_snapshot(persist.snapshot)
            snap_index = persist.snapshot.index
            last = max(last, snap_index)
        truncate: int | None = None
        if persist.truncate_from is not None:
            t = max(persist.truncate_from, snap_index + 1)
            if t <= last:
                truncate = t
                last = t - 1
        entries = persist.entries
        if entries and entries[0].index <= snap_index:
            entries = [e for e in entries if e.index > snap_index]
        if entries:
            if entries[0].index != last + 1:
                raise ValueError(
                    f"entries must continue the log: expected index {last + 1}, "
                    f"got {entries[0].index}"
                )
            for a, b in itertools.pairwise(entries):
                if b.index != a.index + 1:
                    raise ValueError(f"entry indices are not consecutive: {a.index} → {b.index}")
            entries = list(entries)
        return PlannedWrite(truncate, entries, persist.hard_state, persist.state, persist.snapshot)

    def apply(self, write: PlannedWrite) -> None:
        """Apply a write produced by :meth:`plan` (on this same state)."""
        if write.snapshot is not None:
            self.apply_snapshot(write.snapshot.index, write.snapshot.term)
        if write.truncate_from is not None:
            if self.entries is not None:
                del self.entries[write.truncate_from - self.first_index :]
            self.last_index = write.truncate_from - 1
        if write.entries:
            if self.entries is not None:
                self.entries.extend(write.entries)
            self.last_index = write.entries[-1].index
        if write.hard_state is not None:
            self.hard_state = write.hard_state
        if write.state is not None:
            self.state = write.state

    def check_snapshot(self, snapshot: Snapshot) -> None:
        """Raise ``ValueError`` for a snapshot older than the stored one."""
        if snapshot.index < 0 or snapshot.term < 0:
            raise ValueError("snapshot index and term must not be negative")
        if snapshot.index < self.snapshot_index:
            raise ValueError(
                f"snapshot at index {snapshot.index} is older than the stored one "
                f"at {self.snapshot_index}"
            )

    def apply_snapshot(self, index: int, term: int) -> None:
        """Make ``(index, term)`` the snapshot point: drop entries ≤ index, keep those after."""
        drop = index - self.snapshot_index
        if self.entries is not None:
            if drop >= len(self.entries):
                self.entries = []
            elif drop > 0:
                del self.entries[:drop]
        self.snapshot_index = index
        self.snapshot_term = term
        self.last_index = max(self.last_index, index)
