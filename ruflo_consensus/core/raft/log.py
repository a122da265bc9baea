"""Raft's in-memory log: the entries after the snapshot point, and what is not yet stored.

``entries[0]`` is a sentinel that stands for the snapshot point: the index and term of
the last compacted entry (``(0, 0)`` without a snapshot). ``entries[k]`` is the entry at
index ``offset + k``. Indexes below ``offset`` are gone; their terms are unknown (-1).

The log also remembers the first index that the driver has not been handed for storage
yet (``unstable_from``): the next ``Ready`` writes the entries from there, after
truncating whatever storage holds from that index on.
"""

from __future__ import annotations

from ..base import Entry
from .messages import entry_size

__all__ = ["RaftLog"]


class RaftLog:
    """The entries from the snapshot point on, and the unstored suffix."""

    __slots__ = ("entries", "offset", "unstable_from")

    def __init__(self, base_index: int, base_term: int, entries: list[Entry]) -> None:
        """A log whose snapshot point is ``(base_index, base_term)``, followed by ``entries``.

        Raises ``ValueError`` when ``entries`` do not run contiguously from
        ``base_index + 1``.
        """
        self.offset = base_index
        self.entries: list[Entry] = [Entry(base_term, base_index, None)]
        for i, e in enumerate(entries, start=base_index + 1):
            if e.index != i:
                raise ValueError(f"stored entries are not contiguous at index {i}")
            self.entries.append(e)
        self.unstable_from: int | None = None

    # ----------------------------------------------------------------- reading

    @property
    def last_index(self) -> int:
        """Index of the last entry (the snapshot's index when none follows it)."""
        return self.offset + len(self.entries) - 1

    def term_at(self, index: int) -> int:
        """Term at ``index``: the snapshot's term at the snapshot point, 0 for index 0,
        -1 when the entry is compacted away or beyond the log."""
        k = index - self.offset
        if 0 <= k < len(self.entries):
            return self.entries[k].term
        return 0 if index == 0 else -1

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` if the log still holds it (None when compacted or beyond)."""
        k = index - self.offset
        if 1 <= k < len(self.entries):
            return self.entries[k]
        return None

    def slice(self, first: int, stop: int) -> list[Entry]:
        """The entries from ``first`` (after the snapshot point) up to ``stop`` (excluded)
        that the log holds."""
        return self.entries[first - self.offset : stop - self.offset]

    def batch(self, first: int, max_entries: int, max_bytes: int) -> tuple[list[Entry], int]:
        """The entries to send from ``first`` on, and their size in bytes.

        At most ``max_entries`` of them, cut before the entry that would take the size past
        ``max_bytes`` (the first entry always goes, however large).
        """
        batch = self.slice(first, first + max_entries)
        size = 0
        for k, e in enumerate(batch):
            esize = entry_size(e)
            if k > 0 and size + esize > max_bytes:
                return batch[:k], size
            size += esize
        return batch, size

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at ``(last_index, last_term)`` at least as up to date as this one?"""
        my_last = self.last_index
        my_term = self.term_at(my_last)
        return last_term > my_term or (last_term == my_term and last_index >= my_last)

    # ----------------------------------------------------------------- conflicts

    def conflict_hint(self, prev_index: int, commit: int) -> tuple[int, int]:
        """Where a follower's log diverges before the leader's ``prev_index``.

        Returns ``(first index of our term at prev_index, that term)`` — never going back
        to ``commit`` or below, which is known to match — or ``(last_index + 1, 0)`` when
        the log is simply shorter.
        """
        if prev_index > self.last_index:
            return self.last_index + 1, 0
        term = self.term_at(prev_index)
        index = prev_index
        while index - 1 > commit and self.term_at(index - 1) == term:
            index -= 1
        return index, term

    def next_after_rejection(self, rejected: int, hint_index: int, hint_term: int) -> int:
        """The leader's next index to probe after a follower rejected ``rejected``.

        With a hint term the leader skips to just after its own last entry of that term
        (if it has one); otherwise it goes to the follower's hint index.
        """
        if hint_term > 0:
            index = min(rejected, self.last_index)
            while index > self.offset and self.term_at(index) > hint_term:
                index -= 1
            if index > 0 and self.term_at(index) == hint_term:
                return index + 1
        return hint_index

    # ----------------------------------------------------------------- writing

    def mark_unstable(self, index: int) -> None:
        """Entries from ``index`` on must be (re)written to storage."""
        if self.unstable_from is None or index < self.unstable_from:
            self.unstable_from = index

    def append(self, entry: Entry) -> None:
        """Append ``entry`` (the next index) and mark it for storage."""
        self.entries.append(entry)
        self.mark_unstable(entry.index)

    def append_after(self, prev_index: int, entries: tuple[Entry, ...]) -> int | None:
        """Write a leader's ``entries`` after ``prev_index``; return the first index written.

        Entries the log already holds with the same term are skipped; at the first one
        whose term differs, the log is cut there and the rest appended. Returns None when
        every entry was already there. ``prev_index`` must be at or after the snapshot point.
        """
        off = self.offset
        for k, entry in enumerate(entries):
            index = prev_index + 1 + k
            if index <= self.last_index:
                if self.entries[index - off].term == entry.term:
                    continue
                del self.entries[index - off :]
            self.entries.extend(entries[k:])
            self.mark_unstable(index)
            return index
        return None

    def take_unstable(self) -> tuple[int, list[Entry]] | None:
        """``(first index, entries)`` not yet handed for storage, and forget them; or None."""
        first = self.unstable_from
        if first is None:
            return None
        self.unstable_from = None
        return first, self.entries[first - self.offset :]

    # ----------------------------------------------------------------- compaction

    def compact_to(self, index: int, term: int) -> None:
        """Make ``(index, term)`` the snapshot point, keeping the entries after it."""
        del self.entries[: index - self.offset]
        self.entries[0] = Entry(term, index, None)
        self.offset = index
        if self.unstable_from is not None and self.unstable_from <= index:
            self.unstable_from = index + 1 if self.last_index > index else None

    def reset_to(self, index: int, term: int) -> None:
        """Drop everything: the log is the snapshot point ``(index, term)`` alone, and
        storage must drop whatever follows it."""
        self.entries = [Entry(term, index, None)]
        self.offset = index
        self.unstable_from = index + 1
