"""Snapshots: when to ask for one, and moving one to a follower in chunks.

- :class:`SnapshotTrigger` counts what the driver applied since the last snapshot and
  says when ``RaftConfig.snapshot_entries`` or ``snapshot_bytes`` is passed;
- :func:`chunk_message` cuts the ``InstallSnapshot`` chunk a leader sends next;
- :func:`chunk_problem` and :func:`continuation_problem` check a chunk a follower
  received, and :class:`IncomingSnapshot` assembles the chunks of one snapshot.

The leader's side of a transfer in progress (offset acknowledged, stalls) lives in the
follower's :class:`~.progress.Progress`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import Entry, NodeId, Snapshot
from .membership import configuration_problem
from .messages import InstallSnapshot, entry_size

__all__ = [
    "IncomingSnapshot",
    "SnapshotTrigger",
    "chunk_message",
    "chunk_problem",
    "continuation_problem",
]


class SnapshotTrigger:
    """Decides when the applied log has grown enough to ask the driver for a snapshot."""

    __slots__ = ("applied_bytes", "asked_at", "every_bytes", "every_entries")

    def __init__(self, every_entries: int, every_bytes: int, base_index: int) -> None:
        """Ask after ``every_entries`` entries or ``every_bytes`` bytes (0: never) past
        ``base_index``."""
        self.every_entries = every_entries
        self.every_bytes = every_bytes
        self.asked_at = base_index
        self.applied_bytes = 0

    def due(self, applied: list[Entry], applied_index: int) -> int | None:
        """``applied`` were just handed out, through ``applied_index``: the index to
        snapshot at, or None when no threshold is passed yet."""
        if self.every_bytes:
            self.applied_bytes += sum(entry_size(e) for e in applied)
        since = applied_index - self.asked_at
        if (self.every_entries and since >= self.every_entries) or (
            self.every_bytes and self.applied_bytes >= self.every_bytes
        ):
            self.restart(applied_index)
            return applied_index
        return None

    def moved_to(self, index: int) -> None:
        """The log's base moved to ``index``: count from there if that is later."""
        if self.asked_at < index:
            self.restart(index)

    def restart(self, index: int) -> None:
        """Count afresh from ``index``."""
        self.asked_at = index
        self.applied_bytes = 0


def chunk_message(
    src: NodeId, dst: NodeId, term: int, snap: Snapshot, offset: int, chunk_bytes: int
) -> InstallSnapshot:
    """The chunk of ``snap`` that starts at byte ``offset``, at most ``chunk_bytes`` long."""
    chunk = snap.data[offset : offset + chunk_bytes]
    total = len(snap.data)
    return InstallSnapshot(
        src,
        dst,
        term,
        snap.index,
        snap.term,
        snap.voters,
        snap.learners,
        offset,
        total,
        chunk,
        offset + len(chunk) == total,
    )


def _identity(m: InstallSnapshot) -> tuple[Any, ...]:
    """What every chunk of one snapshot transfer has in common."""
    return (m.src, m.term, m.index, m.snap_term, m.voters, m.learners, m.total)


@dataclass(slots=True)
class IncomingSnapshot:
    """A snapshot a follower is receiving chunk by chunk: its first chunk and the bytes."""

    first: InstallSnapshot
    buf: bytearray

    def same_snapshot(self, m: InstallSnapshot) -> bool:
        """True when ``m`` is a chunk of this snapshot (same sender, term, identity, size)."""
        return _identity(self.first) == _identity(m)


def chunk_problem(m: InstallSnapshot, max_snapshot_bytes: int) -> tuple[str, str] | None:
    """``(reason, detail)`` when a chunk's own fields are wrong, else None."""
    if m.index < 1 or m.snap_term < 1 or m.snap_term > m.term:
        return "bad-field", "snapshot index/term out of range"
    if m.offset < 0 or m.offset + len(m.data) > m.total:
        return "bad-field", f"chunk [{m.offset}, +{len(m.data)}) outside {m.total}"
    if m.done != (m.offset + len(m.data) == m.total):
        return "bad-field", "done must mark exactly the last chunk"
    if m.total > max_snapshot_bytes:
        return (
            "snapshot-too-large",
            f"{m.total} bytes is over max_snapshot_bytes={max_snapshot_bytes}",
        )
    problem = configuration_problem(m.voters, m.learners)
    if problem is not None:
        return "snapshot-membership", f"snapshot configuration: {problem}"
    return None


def continuation_problem(
    incoming: IncomingSnapshot | None, m: InstallSnapshot
) -> tuple[str, str] | None:
    """``(reason, detail)`` when a chunk after the first does not continue ``incoming``.

    It must belong to the snapshot being assembled (same leader, term, index, membership
    and size) and start exactly where the received bytes end — or lie wholly inside them
    (a retransmission, answered without changing anything).
    """
    if incoming is None:
        return "snapshot-out-of-order", f"chunk at {m.offset} without its beginning"
    if not incoming.same_snapshot(m):
        head = incoming.first
        return (
            "snapshot-mismatch",
            f"chunk of snapshot ({m.index}, {m.snap_term}) from {m.src} while receiving "
            f"({head.index}, {head.snap_term}) from {head.src}",
        )
    have = len(incoming.buf)
    if m.offset > have or (m.offset < have < m.offset + len(m.data)):
        return "snapshot-out-of-order", f"chunk at {m.offset} but {have} bytes received"
    return None
