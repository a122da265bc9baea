"""``FileStorage``: a CRC'd, segmented, fsynced write-ahead log plus snapshot files.

Layout of the directory::

    wal-0000000000000000.log   segments, in sequence; the last one is appended to
    wal-0000000000000001.log
    snap-<index>-<term>.snap   the snapshot the WAL's last SNAPSHOT_MARKER names

See :mod:`ruflo_consensus.storage.wal` for the byte format and ``docs/storage.md`` for the
recovery rules and the fsync ordering. In short:

* ``save()`` is one record, one ``write``, one ``fsync`` (plus, when a segment is full,
  starting the next one: create, head record, fsync, fsync of the directory).
* ``save_snapshot()`` writes ``snap-….snap.tmp``, fsyncs it, renames it, fsyncs the
  directory, then appends a SNAPSHOT_MARKER record (write + fsync). Only then are the
  segments the snapshot covers and older snapshot files deleted.
* Opening scans every segment in order. A bad record at the very end of the last segment
  with nothing valid after it is a torn write: the file is truncated there (and fsynced).
  Any other bad record raises :class:`~ruflo_consensus.storage.base.CorruptLogError`
  naming the file and offset.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from ..core.base import Entry, HardState, Persist, Snapshot
from .base import (
    CorruptLogError,
    CorruptSnapshotError,
    LogState,
    MissingSnapshotError,
    PlannedWrite,
    StorageClosedError,
    StorageError,
    StorageIOError,
    StoredState,
)
from .faults import FaultHook, SimulatedCrash, WritePoint
from .fs import AppendFile, DirLock, FileSystem, NoLock, OsFileSystem
from .wal import (
    Malformed,
    RecordType,
    SegmentReader,
    decode_hard_state,
    decode_marker,
    decode_snapshot,
    encode_entries,
    encode_hard_state,
    encode_record,
    encode_snapshot,
    find_valid_record,
    parse_segment_name,
    parse_snapshot_name,
    read_entries_header,
    read_entry_items,
    segment_name,
    snapshot_name,
    unpack,
)

__all__ = ["FileStorage", "RecoveryReport"]

_T = TypeVar("_T")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a scan builds millions of (acyclic) objects.

    Without this, CPython's generational collector walks the growing log again and again
    and reopening a 1M-entry log takes almost three times as long.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _NoFaults:
    def reached(self, point: WritePoint) -> None:
        return None

    def tear(self, point: WritePoint, size: int) -> int | None:
        return None


@dataclass
class RecoveryReport:
    """What opening the directory found and repaired.

    ``truncated`` lists ``(path, offset, bytes_dropped, reason)`` for each torn tail cut
    off; ``removed`` the files deleted (an empty last segment, ``*.tmp`` leftovers,
    snapshot files the WAL does not name).
    """

    segments: int = 0
    records: int = 0
    bytes_scanned: int = 0
    truncated: list[tuple[str, int, int, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Segment:
    seq: int
    path: str
    size: int
    max_index: int = 0  # highest entry index written into it (0: none)


class _Replay:
    """Rebuild the state from records, checking that the log is consistent as it goes.

    Only entries with index ≥ ``keep_from`` are decoded into :class:`Entry` objects; of the
    others the replay keeps just the bounds (an ENTRIES record's header says where its
    entries start and how many there are, so they are skipped undecoded). Opening runs it
    twice: once with nothing kept, to find the last snapshot, then again from the first
    segment that holds anything after it, keeping only those entries. So reopening costs
    memory for the entries after the snapshot, not for the whole WAL.

    When the oldest segments were deleted after a snapshot, the first remaining segment's
    head says where the log stood (``last_index``) without the entries before it: those
    are *unknown* until a snapshot marker covers them. If one never does, the WAL is
    missing data and :meth:`finish` raises.
    """

    def __init__(self, keep_from: float = float("inf")) -> None:
        self.keep_from = keep_from
        self.hard_state: HardState | None = None
        self.marker: tuple[int, int] | None = None
        self.snap_index = 0
        self.log_start = 1  # first known index, or the next index when the log is empty
        self.last_index = 0
        self.entries: list[Entry] = []  # the kept entries: contiguous, ending at last_index
        self.state: bytes | None = None
        self.started = False
        self.first_path = ""

    def head(self, obj: Any, seq: int, path: str, offset: int) -> None:
        if not isinstance(obj, list) or len(obj) != 5:
            raise Malformed("segment head is not [seq, hard_state, marker, last_index, state]")
        hseq, hs_obj, marker_obj, last_index, state = obj
        hs = decode_hard_state(hs_obj)
        marker = decode_marker(marker_obj)
        if hseq != seq:
            raise CorruptLogError(path, offset, f"segment head says seq {hseq}, file is {seq}")
        if not isinstance(last_index, int) or not (state is None or isinstance(state, bytes)):
            raise Malformed("segment head has a bad last index or state")
        snap_index = 0 if marker is None else marker[0]
        if last_index < snap_index:
            raise Malformed("segment head's last index is below its snapshot")
        if not self.started:
            self.started = True
            self.first_path = path
            self.hard_state, self.marker, self.state = hs, marker, state
            self.snap_index = snap_index
            self.log_start = last_index + 1
            self.last_index = last_index
            self.entries = []
            return
        now = (self.hard_state, self.marker, self.last_index, self.state)
        if (hs, marker, last_index, state) != now:
            raise CorruptLogError(
                path,
                offset,
                f"segment head (hard state {hs}, snapshot {marker}, last index {last_index}) "
                f"disagrees with the log before it ({now[0]}, {now[1]}, {now[2]})",
            )

    def record(self, rtype: int, payload: bytes, path: str, offset: int) -> int:
        """Apply one record; return the highest entry index it wrote (0: none)."""
        u = msgpack.Unpacker(raw=False, strict_map_key=False)
        u.feed(payload)
        try:
            top = self._item(rtype, u, path, offset)
            if u.tell() != len(payload):
                raise Malformed("payload has bytes after its value")
        except (Malformed, CorruptLogError):
            raise
        except Exception as exc:  # msgpack raises several unrelated types
            raise Malformed(f"payload is not msgpack ({type(exc).__name__}: {exc})") from None
        return top

    def _item(self, rtype: int, u: msgpack.Unpacker, path: str, offset: int) -> int:
        if rtype == RecordType.ENTRIES:
            return self._entries(u, path, offset)
        if rtype == RecordType.BATCH:
            top = 0
            for _ in range(u.read_array_header()):
                if u.read_array_header() != 2:
                    raise Malformed("BATCH item is not [type, payload]")
                sub = u.unpack()
                if type(sub) is not int or sub in (RecordType.BATCH, RecordType.SEGMENT_HEAD):
                    raise Malformed("BATCH item is not [type, payload]")
                top = max(top, self._item(sub, u, path, offset))
            return top
        obj = u.unpack()
        if rtype == RecordType.HARD_STATE:
            self.hard_state = decode_hard_state(obj)
            if self.hard_state is None:
                raise Malformed("HARD_STATE record without a hard state")
        elif rtype == RecordType.SNAPSHOT_MARKER:
            marker = decode_marker(obj)
            if marker is None:
                raise Malformed("SNAPSHOT_MARKER record without a marker")
            self._snapshot(marker, path, offset)
        elif rtype == RecordType.STATE:
            if not isinstance(obj, bytes):
                raise Malformed("STATE record is not bytes")
            self.state = obj
        elif rtype == RecordType.SEGMENT_HEAD:
            raise CorruptLogError(path, offset, "segment head in the middle of a segment")
        else:
            raise Malformed(f"unknown record type {rtype}")
        return 0

    def _entries(self, u: msgpack.Unpacker, path: str, offset: int) -> int:
        truncate_from, first, count = read_entries_header(u)
        if truncate_from is not None:
            if truncate_from <= self.snap_index or truncate_from > self.last_index:
                raise CorruptLogError(
                    path,
                    offset,
                    f"truncation at {truncate_from} outside the log "
                    f"({self.snap_index + 1}..{self.last_index})",
                )
            if truncate_from < self.log_start:
                self.log_start = truncate_from
            self.last_index = truncate_from - 1
            kept = self.entries
            if kept and kept[0].index >= truncate_from:
                self.entries = []
            elif kept:
                del kept[truncate_from - kept[0].index :]
        if not count:
            return 0
        if first != self.last_index + 1:
            raise CorruptLogError(
                path,
                offset,
                f"entries start at {first} but the log ends at {self.last_index}",
            )
        last = first + count - 1
        if last >= self.keep_from:
            skip = max(0, int(self.keep_from) - first)
            for _ in range(skip):
                u.skip()
            fresh = read_entry_items(u, first + skip, count - skip)
            if self.entries and self.entries[-1].index != first + skip - 1:
                self.entries = []
            self.entries.extend(fresh)
        else:
            for _ in range(count):
                u.skip()
        self.last_index = last
        return last

    def _snapshot(self, marker: tuple[int, int], path: str, offset: int) -> None:
        index, _term = marker
        if index < self.snap_index:
            raise CorruptLogError(
                path, offset, f"snapshot marker {index} is older than {self.snap_index}"
            )
        if index >= self.log_start - 1:
            kept = self.entries
            if kept and kept[0].index <= index:
                del kept[: index - kept[0].index + 1]
            self.log_start = index + 1
            self.last_index = max(self.last_index, index)
        self.snap_index = index
        self.marker = marker

    def finish(self) -> None:
        if self.log_start != self.snap_index + 1:
            raise CorruptLogError(
                self.first_path,
                0,
                f"entries {self.snap_index + 1}..{self.log_start - 1} are missing: earlier "
                "segments were deleted without a snapshot covering them",
            )


class FileStorage:
    """A :class:`~ruflo_consensus.storage.base.RaftStorage` in a directory of files.

    Opening the storage (the constructor) recovers the directory: it scans the WAL,
    truncates a torn tail, checks the snapshot file, and keeps the result for the first
    :meth:`load`. Errors are typed: :class:`CorruptLogError` (file + offset),
    :class:`MissingSnapshotError` / :class:`CorruptSnapshotError`, :class:`StorageIOError`.

    ``fs`` is the file system to run on (default: the OS; a
    :class:`~ruflo_consensus.storage.simdisk.SimDisk` in simulations) and ``faults`` a
    :class:`~ruflo_consensus.storage.faults.FaultHook` for crash tests. ``fsync=False``
    skips every fsync (benchmarks, throwaway tests): then nothing is promised after a
    crash. ``persist.state`` is stored (STATE records) and returned as ``StoredState.state``.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        fs: FileSystem | None = None,
        faults: FaultHook | None = None,
        read_chunk: int = 1 << 20,
    ) -> None:
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        self.directory = str(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._hook: FaultHook = faults if faults is not None else _NoFaults()
        self._chunk = read_chunk
        self._log = LogState(entries=None)
        self._marker: tuple[int, int] | None = None
        self._segments: list[_Segment] = []
        self._next_seq = 0
        self._file: AppendFile | None = None
        self._unsynced = False
        self._compact_after_sync: Snapshot | None = None
        self._closed = False
        self._dead: str | None = None  # why writes are refused (crash, failed write)
        self.recovery = RecoveryReport()
        """What opening found and repaired."""
        self._recovered: StoredState | None = None
        self._lock: DirLock = NoLock()
        try:
            with _gc_paused():
                self._recovered = self._open()
        except SimulatedCrash:
            self._abandon("crashed during recovery")
            raise
        except BaseException:
            self._lock.release()
            raise

    # ------------------------------------------------------------------ helpers

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _io(self, path: str, op: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except OSError as exc:
            raise StorageIOError(path, op, exc) from exc

    def _check_writable(self) -> None:
        if self._closed:
            raise StorageClosedError(f"{self.directory}: storage is closed")
        if self._dead is not None:
            raise StorageClosedError(f"{self.directory}: storage is unusable ({self._dead})")

    def _abandon(self, why: str) -> None:
        """Drop file handles without syncing (after a crash or a failed write)."""
        self._dead = why
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._lock.release()  # as the dead process's would be

    # ------------------------------------------------------------------ open / recovery

    def _open(self) -> StoredState:
        fs, directory = self._fs, self.directory
        self._io(directory, "mkdir", lambda: fs.makedirs(directory))
        self._lock = self._io(directory, "lock", lambda: fs.lock(directory))
        names = self._io(directory, "listdir", lambda: fs.listdir(directory))
        removed_any = False
        for name in sorted(names):
            if name.startswith("snap-") and name.endswith(".tmp"):
                self._remove_quietly(self._path(name))
                removed_any = True
        seqs = sorted(s for s in (parse_segment_name(n) for n in names) if s is not None)
        for a, b in itertools.pairwise(seqs):
            if b != a + 1:
                raise CorruptLogError(
                    self._path(segment_name(b)), 0, f"segment {segment_name(a + 1)} is missing"
                )
        replay = _Replay()  # pass 1: bounds, hard state, snapshot; no entries decoded
        for k, seq in enumerate(seqs):
            last = k == len(seqs) - 1
            seg = self._scan_segment(seq, replay, last=last, repair=True)
            if seg.size == 0 and last:
                # the head of a new segment was torn: the segment never existed
                self._remove_quietly(seg.path)
                removed_any = True
                self._next_seq = seq
                continue
            self._segments.append(seg)
        if self._segments:
            self._next_seq = self._segments[-1].seq + 1
        replay.finish()
        entries = self._entries_after_snapshot(replay)  # pass 2

        snapshot: Snapshot | None = None
        keep: str | None = None
        if replay.marker is not None:
            index, term = replay.marker
            keep = snapshot_name(index, term)
            snapshot = self._read_snapshot(self._path(keep), index, term)
        for name in sorted(names):
            if parse_snapshot_name(name) is not None and name != keep:
                path = self._path(name)
                if fs.exists(path):
                    self._remove_quietly(path)
                    removed_any = True
        if removed_any and self.fsync:
            self._io(directory, "fsync", lambda: fs.sync_dir(directory))

        self._log = LogState(
            hard_state=replay.hard_state,
            snapshot_index=replay.snap_index,
            snapshot_term=0 if replay.marker is None else replay.marker[1],
            last_index=replay.last_index,
            state=replay.state,
            entries=None,
        )
        self._marker = replay.marker
        self.recovery.segments = len(self._segments)
        return StoredState(replay.hard_state, snapshot, entries, replay.state)

    def _entries_after_snapshot(self, bounds: _Replay) -> list[Entry]:
        """Decode the log after the snapshot that a bounds-only replay found.

        Only segments from the first one that wrote an entry after the snapshot are read
        again, and only the entries after the snapshot become objects.
        """
        keep_from = bounds.snap_index + 1
        if bounds.last_index < keep_from:
            return []
        replay = _Replay(keep_from)
        segments = self._segments
        start = next((k for k, s in enumerate(segments) if s.max_index >= keep_from), None)
        if start is None:
            raise CorruptLogError(
                self.first_segment_path(),
                0,
                f"the log ends at {bounds.last_index} but no segment holds entries after "
                f"the snapshot at {bounds.snap_index}",
            )
        for k in range(start, len(segments)):
            last = k == len(segments) - 1
            self._scan_segment(segments[k].seq, replay, last=last, repair=False)
        got = replay.entries
        first = got[0].index if got else None
        if first != keep_from or replay.last_index != bounds.last_index:
            raise CorruptLogError(
                segments[start].path,
                0,
                f"second scan found entries {first}..{replay.last_index}, the first "
                f"{keep_from}..{bounds.last_index}",
            )
        return got

    def _remove_quietly(self, path: str) -> None:
        """Remove a leftover file during recovery (the caller fsyncs the directory)."""
        fs = self._fs
        self._io(path, "remove", lambda: fs.remove(path))
        self.recovery.removed.append(path)

    def _scan_segment(self, seq: int, replay: _Replay, *, last: bool, repair: bool) -> _Segment:
        fs = self._fs
        path = self._path(segment_name(seq))
        size = self._io(path, "stat", lambda: fs.size(path))
        f = self._io(path, "open", lambda: fs.open_read(path))
        seg = _Segment(seq, path, size)
        try:
            reader = SegmentReader(f, size, self._chunk)
            records = 0
            try:
                for offset, rtype, payload in reader:
                    try:
                        if records == 0:
                            if rtype != RecordType.SEGMENT_HEAD:
                                raise CorruptLogError(
                                    path, offset, "segment does not start with a head record"
                                )
                            replay.head(unpack(payload), seq, path, offset)
                        else:
                            top = replay.record(rtype, payload, path, offset)
                            if top > seg.max_index:
                                seg.max_index = top
                    except Malformed as exc:
                        raise CorruptLogError(path, offset, str(exc)) from None
                    records += 1
            except OSError as exc:
                raise StorageIOError(path, "read", exc) from exc
            if repair:  # a rescan by load() is not part of the recovery report
                self.recovery.records += records
                self.recovery.bytes_scanned += reader.good_end
            if reader.bad is None:
                if records == 0 and not last:
                    raise CorruptLogError(path, 0, "empty segment (not the last one)")
                return seg
            offset, reason = reader.bad
            if not last:
                raise CorruptLogError(path, offset, reason + " (not the last segment)")
            follow = self._io(path, "read", lambda: find_valid_record(f, offset + 1, size))
            if follow is not None:
                raise CorruptLogError(
                    path, offset, f"{reason}; a valid record follows at offset {follow}"
                )
            if not repair:
                raise CorruptLogError(path, offset, reason + " (torn tail while open)")
        finally:
            f.close()
        # a torn write at the very end: cut it off, durably
        self._hook.reached(WritePoint.RECOVER_BEFORE_TRUNCATE)
        w = self._io(path, "open", lambda: fs.open_append(path))
        try:
            self._io(path, "truncate", lambda: w.truncate(offset))
            if self.fsync:
                self._io(path, "fsync", w.sync)
        finally:
            w.close()
        self.recovery.truncated.append((path, offset, size - offset, reason))
        seg.size = offset
        return seg

    def _read_snapshot(self, path: str, index: int, term: int) -> Snapshot:
        fs = self._fs
        if not self._io(path, "stat", lambda: fs.exists(path)):
            raise MissingSnapshotError(
                path, f"snapshot ({index}, {term}) named by the WAL is missing"
            )

        def read() -> bytes:
            f = fs.open_read(path)
            try:
                return f.read(fs.size(path))
            finally:
                f.close()

        data = self._io(path, "read", read)
        try:
            snap = decode_snapshot(data)
        except Malformed as exc:
            raise CorruptSnapshotError(path, str(exc)) from None
        if (snap.index, snap.term) != (index, term):
            raise CorruptSnapshotError(
                path, f"holds ({snap.index}, {snap.term}), the WAL expects ({index}, {term})"
            )
        return snap

    # ------------------------------------------------------------------ RaftStorage

    def load(self) -> StoredState:
        """Return the stored state.

        The first call after opening hands over what recovery read (and forgets it, so the
        entries exist once in memory); later calls scan the files again, read-only.
        """
        if self._closed:
            raise StorageClosedError(f"{self.directory}: storage is closed")
        if self._recovered is not None:
            state, self._recovered = self._recovered, None
            return state
        if self._dead is not None:
            raise StorageClosedError(f"{self.directory}: storage is unusable ({self._dead})")
        replay = _Replay()
        with _gc_paused():
            for k, seg in enumerate(self._segments):
                last = k == len(self._segments) - 1
                self._scan_segment(seg.seq, replay, last=last, repair=False)
            replay.finish()
            entries = self._entries_after_snapshot(replay)
        snapshot = None
        if replay.marker is not None:
            index, term = replay.marker
            snapshot = self._read_snapshot(self._path(snapshot_name(index, term)), index, term)
        return StoredState(replay.hard_state, snapshot, entries, replay.state)

    def save(self, persist: Persist) -> None:
        """Make ``persist`` durable: one record, one write, one fsync, then return.

        With ``persist.snapshot`` the snapshot file is written and made durable first (see
        :meth:`save_snapshot`), and the record carries its marker along with the rest, so
        the whole change is one all-or-nothing record. Raises ``ValueError`` (nothing
        written) when the entries do not continue the log or the snapshot is older than
        the stored one, :class:`StorageIOError` when the disk fails (the storage then
        refuses further writes until opened again).
        """
        self.write(persist)
        self.sync()

    def write(self, persist: Persist) -> None:
        """Append ``persist``'s record without the fsync; :meth:`sync` makes it durable.

        A crash before the sync may lose this record and any later one (never part of a
        record: recovery cuts a torn one off). The snapshot file of ``persist.snapshot`` is
        durable before the record is written; the segments it makes unnecessary are
        deleted only after the sync, once the marker that covers them is durable.
        """
        self._check_writable()
        write = self._log.plan(persist)
        if write.is_empty():
            return
        record = self._encode_write(write)  # before anything is written: TypeError changes nothing
        if write.snapshot is not None:
            self._write_snapshot_file(write.snapshot)
        top = write.entries[-1].index if write.entries else 0
        self._append(record, top)
        self._log.apply(write)
        if write.snapshot is not None:
            self._marker = (write.snapshot.index, write.snapshot.term)
            self._compact_after_sync = write.snapshot
        self._recovered = None

    def sync(self) -> None:
        """fsync what :meth:`write` appended since the last sync, then compact.

        One fsync covers every record written before it (group commit). Without unsynced
        writes this does nothing.
        """
        self._check_writable()
        if self._unsynced:
            file = self._file
            assert file is not None
            path = self._segments[-1].path

            def run() -> None:
                if self.fsync:
                    self._io(path, "fsync", file.sync)
                self._unsynced = False
                self._hook.reached(WritePoint.WAL_AFTER_SYNC)

            self._guard(run)
        snapshot, self._compact_after_sync = self._compact_after_sync, None
        if snapshot is not None:
            self._compact(snapshot)

    @property
    def unsynced(self) -> bool:
        """True when a :meth:`write` is not yet covered by a :meth:`sync`."""
        return self._unsynced

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` durably, then drop what it covers.

        Order: snapshot file (tmp, fsync, rename, fsync directory) → SNAPSHOT_MARKER record
        (write, fsync) → delete the segments holding only entries ≤ ``snapshot.index`` and
        older snapshot files (fsyncing the directory after each). ``ValueError`` for a
        snapshot older than the stored one. The same as ``save(Persist(snapshot=…))``.
        """
        self.save(Persist(snapshot=snapshot))

    def close(self) -> None:
        """Sync what :meth:`write` left unsynced, then close the open segment."""
        if (
            not self._closed
            and self._dead is None
            and (self._unsynced or self._compact_after_sync is not None)
        ):
            self.sync()
        try:
            if self._file is not None:
                file, self._file = self._file, None
                self._io(self.directory, "close", file.close)
        finally:
            self._closed = True
            self._recovered = None
            self._lock.release()

    # ------------------------------------------------------------------ writing

    @property
    def segments(self) -> list[str]:
        """Paths of the WAL segments, oldest first."""
        return [s.path for s in self._segments]

    def first_segment_path(self) -> str:
        """Path of the oldest WAL segment (the directory when there is none)."""
        return self._segments[0].path if self._segments else self.directory

    def _encode_write(self, write: PlannedWrite) -> bytes:
        parts: list[tuple[RecordType, Any]] = []
        if write.snapshot is not None:
            parts.append((RecordType.SNAPSHOT_MARKER, [write.snapshot.index, write.snapshot.term]))
        if write.truncate_from is not None or write.entries:
            parts.append((RecordType.ENTRIES, encode_entries(write.truncate_from, write.entries)))
        if write.hard_state is not None:
            parts.append((RecordType.HARD_STATE, encode_hard_state(write.hard_state)))
        if write.state is not None:
            parts.append((RecordType.STATE, bytes(write.state)))
        if len(parts) == 1:
            return encode_record(*parts[0])
        return encode_record(RecordType.BATCH, [[int(t), p] for t, p in parts])

    def _guard(self, fn: Callable[[], _T]) -> _T:
        """Run a write step; a crash or an I/O error leaves the storage unusable."""
        try:
            return fn()
        except SimulatedCrash as exc:
            self._abandon(f"simulated crash at {exc.point.value}")
            raise
        except StorageIOError as exc:
            self._abandon(f"{exc.op} failed on {exc.path}")
            raise

    def _write_torn(self, file: AppendFile, path: str, data: bytes, point: WritePoint) -> None:
        k = self._hook.tear(point, len(data))
        if k is not None:
            self._io(path, "write", lambda: file.write(data[:k]))
            raise SimulatedCrash(point, f"{k} of {len(data)} bytes written")
        self._io(path, "write", lambda: file.write(data))

    def _append(self, record: bytes, top: int) -> None:
        def run() -> None:
            seg = self._current_segment()
            file = self._file
            assert file is not None
            self._hook.reached(WritePoint.WAL_BEFORE_WRITE)
            self._write_torn(file, seg.path, record, WritePoint.WAL_MID_RECORD)
            seg.size += len(record)
            if top > seg.max_index:
                seg.max_index = top
            self._unsynced = True
            self._hook.reached(WritePoint.WAL_AFTER_WRITE)

        self._guard(run)

    def _current_segment(self) -> _Segment:
        if self._segments and self._segments[-1].size < self.segment_bytes:
            seg = self._segments[-1]
            if self._file is None:
                self._file = self._io(seg.path, "open", lambda: self._fs.open_append(seg.path))
            return seg
        return self._rotate()

    def _rotate(self) -> _Segment:
        fs, hook = self._fs, self._hook
        seq = self._next_seq
        path = self._path(segment_name(seq))
        if self._unsynced and self._file is not None:
            # a segment is complete and durable before the next one starts
            old_path = self._segments[-1].path
            if self.fsync:
                self._io(old_path, "fsync", self._file.sync)
            self._unsynced = False
        hook.reached(WritePoint.SEGMENT_BEFORE_CREATE)
        if self._file is not None:
            old, self._file = self._file, None
            self._io(self._segments[-1].path, "close", old.close)
        if self._io(path, "stat", lambda: fs.exists(path)):
            raise StorageError(f"{path}: next WAL segment already exists")
        file = self._io(path, "open", lambda: fs.open_append(path))
        self._file = file
        log = self._log
        marker = None if self._marker is None else list(self._marker)
        head = encode_record(
            RecordType.SEGMENT_HEAD,
            [seq, encode_hard_state(log.hard_state), marker, log.last_index, log.state],
        )
        self._write_torn(file, path, head, WritePoint.SEGMENT_MID_HEAD)
        hook.reached(WritePoint.SEGMENT_AFTER_HEAD)
        if self.fsync:
            self._io(path, "fsync", file.sync)
        hook.reached(WritePoint.SEGMENT_BEFORE_DIR_SYNC)
        if self.fsync:
            self._io(self.directory, "fsync", lambda: fs.sync_dir(self.directory))
        seg = _Segment(seq, path, len(head))
        self._segments.append(seg)
        self._next_seq = seq + 1
        return seg

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        fs, hook = self._fs, self._hook
        path = self._path(snapshot_name(snapshot.index, snapshot.term))
        tmp = path + ".tmp"
        data = encode_snapshot(snapshot)

        def run() -> None:
            if self._io(tmp, "stat", lambda: fs.exists(tmp)):
                self._io(tmp, "remove", lambda: fs.remove(tmp))
            hook.reached(WritePoint.SNAP_BEFORE_WRITE)
            f = self._io(tmp, "open", lambda: fs.open_append(tmp))
            try:
                self._write_torn(f, tmp, data, WritePoint.SNAP_MID_WRITE)
                hook.reached(WritePoint.SNAP_BEFORE_SYNC)
                if self.fsync:
                    self._io(tmp, "fsync", f.sync)
            finally:
                f.close()
            hook.reached(WritePoint.SNAP_BEFORE_RENAME)
            self._io(tmp, "rename", lambda: fs.rename(tmp, path))
            hook.reached(WritePoint.SNAP_BEFORE_DIR_SYNC)
            if self.fsync:
                self._io(self.directory, "fsync", lambda: fs.sync_dir(self.directory))

        self._guard(run)

    def _compact(self, snapshot: Snapshot) -> None:
        fs, hook = self._fs, self._hook
        keep = snapshot_name(snapshot.index, snapshot.term)

        def remove(path: str) -> None:
            hook.reached(WritePoint.COMPACT_BEFORE_DELETE)
            self._io(path, "remove", lambda: fs.remove(path))
            if self.fsync:
                self._io(self.directory, "fsync", lambda: fs.sync_dir(self.directory))

        def run() -> None:
            # oldest first, never the segment being appended to: the rest stays a suffix
            while len(self._segments) > 1 and self._segments[0].max_index <= snapshot.index:
                remove(self._segments[0].path)
                self._segments.pop(0)
            names = self._io(self.directory, "listdir", lambda: fs.listdir(self.directory))
            for name in sorted(names):
                if parse_snapshot_name(name) is not None and name != keep:
                    remove(self._path(name))

        self._guard(run)
