"""Raft's safety properties, checked against the whole simulated cluster while it runs.

The simulator sees every node at once, which no real node can: it uses that view to
check the four properties of the Raft paper (Figure 3) as the run goes, and stops at the
first violation with a report of what broke, where and when.

- **election safety**: at most one leader per term;
- **log matching**: two logs with an entry of the same index and term are identical up to it;
- **leader completeness**: a leader's log holds every entry committed before its term;
- **state machine safety**: no two nodes apply different entries at the same index;
- **snapshot safety**: a snapshot at index *i* (taken, installed or restored after a
  restart) holds exactly the state of applying entries 1..*i* — checked against a
  reference replica that applies the agreed entries in order.

A log is given as a list whose element 0 stands for its snapshot point (an entry with the
snapshot's index and term, or ``(0, 0)`` without one) and element *k* is the entry at
index ``log[0].index + k``.

Entries are compared by what was replicated — term, index, configuration, client, sequence
number and the command's encoded bytes (:func:`~ruflo_consensus.check.encoded.wire_bytes`)
— never by ``==`` on the decoded command: a command carrying a NaN is not ``==`` to its own
copy read back from a WAL, and that is no safety violation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..check.encoded import wire_bytes
from ..core.base import Entry, NodeId, Snapshot

__all__ = ["InvariantViolation", "RaftInvariants", "ReferenceReplica", "same_entry"]


class ReferenceReplica(Protocol):
    """What the snapshot check replays entries into (a :class:`SessionTable` fits)."""

    def apply(self, client: str | None, seq: int, command: object) -> object:
        """Apply one committed command."""
        ...

    def snapshot(self) -> bytes:
        """The replica's state, byte-identical for identical histories."""
        ...

    def restore(self, data: bytes) -> None:
        """Load a state made by :meth:`snapshot`."""
        ...


@dataclass
class InvariantViolation(Exception):
    """The first broken invariant of a run."""

    invariant: str
    time_us: int
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} violated at t={self.time_us / 1e6:.6f}s: {self.detail}"


def _replicated(entry: Entry) -> tuple[object, ...]:
    p = entry.proposal
    command = None if p is None else (p.client, p.seq, wire_bytes(p.command))
    return (entry.term, entry.index, entry.conf, command)


def same_entry(a: Entry, b: Entry) -> bool:
    """True when ``a`` and ``b`` are the same replicated entry (byte for byte, not ``==``)."""
    return a is b or _replicated(a) == _replicated(b)


def _describe(entry: Entry | None) -> str:
    if entry is None:
        return "nothing"
    p = entry.proposal
    if p is None:
        what = "no-op" if entry.conf is None else f"configuration {entry.conf!r}"
    else:
        digest = hashlib.blake2b(wire_bytes(p.command), digest_size=6).hexdigest()
        what = f"{p.client}#{p.seq} {p.command!r} (encoded {digest})"
    return f"[index {entry.index}, term {entry.term}: {what}]"


class RaftInvariants:
    """Incremental checker of Raft's safety properties over a simulated cluster.

    ``reference`` builds a fresh replica (state machine behind its session table) for the
    snapshot-safety check; without it snapshots are only checked for their term.
    """

    NAMES = (
        "election-safety",
        "log-matching",
        "leader-completeness",
        "state-machine-safety",
        "snapshot-safety",
    )
    CHECKPOINT_EVERY = 32

    def __init__(self, reference: Callable[[], ReferenceReplica] | None = None) -> None:
        self.leaders: dict[int, NodeId] = {}
        self.applied: list[Entry] = [Entry(0, 0, None)]
        self.applied_by: list[NodeId] = [""]
        self.checks: dict[str, int] = dict.fromkeys(self.NAMES, 0)
        self._reference = reference
        self._ref: ReferenceReplica | None = None
        self._ref_at = 0
        self._checkpoints: dict[int, bytes] = {}

    def on_leader(self, node: NodeId, term: int, log: Sequence[Entry], now: int) -> None:
        """A node became leader of ``term`` with ``log``: election safety + completeness."""
        self.checks["election-safety"] += 1
        other = self.leaders.get(term)
        if other is not None and other != node:
            raise InvariantViolation(
                "election-safety", now, f"{other} and {node} are both leaders of term {term}"
            )
        self.leaders[term] = node
        self.checks["leader-completeness"] += 1
        known = len(self.applied) - 1
        base = log[0].index
        if 0 < base <= known and log[0].term != self.applied[base].term:
            raise InvariantViolation(
                "leader-completeness",
                now,
                f"{node} became leader of term {term} with a snapshot at index {base} of term "
                f"{log[0].term}, but the committed entry there is {_describe(self.applied[base])}",
            )
        for i in range(base + 1, known + 1):
            k = i - base
            mine = log[k] if k < len(log) else None
            if mine is None or not same_entry(mine, self.applied[i]):
                raise InvariantViolation(
                    "leader-completeness",
                    now,
                    f"{node} became leader of term {term} without committed entry "
                    f"{_describe(self.applied[i])} (applied by {self.applied_by[i]}); "
                    f"its log has {_describe(mine)}",
                )

    def on_apply(self, node: NodeId, entry: Entry, now: int) -> None:
        """A node applied ``entry``: it must match what every other node applied there."""
        self.checks["state-machine-safety"] += 1
        i = entry.index
        if i < len(self.applied):
            if not same_entry(self.applied[i], entry):
                raise InvariantViolation(
                    "state-machine-safety",
                    now,
                    f"{node} applied {_describe(entry)} but {self.applied_by[i]} applied "
                    f"{_describe(self.applied[i])} at index {i}",
                )
        elif i == len(self.applied):
            self.applied.append(entry)
            self.applied_by.append(node)
        else:
            raise InvariantViolation(
                "state-machine-safety",
                now,
                f"{node} applied index {i} before index {len(self.applied)}",
            )

    def check_logs(self, logs: dict[NodeId, list[Entry]], now: int) -> None:
        """Log matching across every pair of nodes (crashed nodes' persisted logs included).

        Two logs are compared where both still hold entries: from the later of their
        snapshot points (where only the terms can be compared) to the shorter end.
        """
        self.checks["log-matching"] += 1
        names = list(logs)
        for a_pos, a in enumerate(names):
            la = logs[a]
            base_a = la[0].index
            for b in names[a_pos + 1 :]:
                lb = logs[b]
                base_b = lb[0].index
                lo = max(base_a, base_b)
                i = min(base_a + len(la), base_b + len(lb)) - 1
                while i > lo and la[i - base_a].term != lb[i - base_b].term:
                    i -= 1
                if i <= lo:
                    continue
                if la[lo - base_a].term == lb[lo - base_b].term and all(
                    same_entry(la[k - base_a], lb[k - base_b]) for k in range(lo + 1, i + 1)
                ):
                    continue
                j = next(
                    k
                    for k in range(lo, i + 1)
                    if (la[k - base_a].term != lb[k - base_b].term)
                    or (k > lo and not same_entry(la[k - base_a], lb[k - base_b]))
                )
                raise InvariantViolation(
                    "log-matching",
                    now,
                    f"{a} and {b} agree on term {la[i - base_a].term} at index {i} but differ "
                    f"at index {j}: {a} has {_describe(la[j - base_a])}, "
                    f"{b} has {_describe(lb[j - base_b])}",
                )

    def on_snapshot(self, node: NodeId, snapshot: Snapshot, how: str, now: int) -> None:
        """``node`` took, installed or restored ``snapshot`` (``how`` says which).

        Its index must be one the cluster applied, its term that entry's term, and its
        data the reference replica's state after exactly the entries up to it.
        """
        self.checks["snapshot-safety"] += 1
        i = snapshot.index
        known = len(self.applied) - 1
        where = f"{node} {how} a snapshot at index {i} (term {snapshot.term})"
        if i > known:
            raise InvariantViolation(
                "snapshot-safety", now, f"{where}, but only {known} entries were ever applied"
            )
        if i > 0 and self.applied[i].term != snapshot.term:
            raise InvariantViolation(
                "snapshot-safety",
                now,
                f"{where}, but the entry applied there is {_describe(self.applied[i])}",
            )
        if self._reference is None:
            return
        expected = self._reference_state(i)
        if snapshot.data != expected:
            raise InvariantViolation(
                "snapshot-safety",
                now,
                f"{where} whose state differs from applying entries 1..{i} in order "
                f"({len(snapshot.data)} bytes, the replay gives {len(expected)}): it skipped "
                "or repeated entries",
            )

    def _replay(self, replica: ReferenceReplica, start: int, end: int) -> None:
        for e in self.applied[start + 1 : end + 1]:
            p = e.proposal
            if p is not None:
                replica.apply(p.client, p.seq, p.command)

    def _reference_state(self, index: int) -> bytes:
        """The state after applying entries 1..``index`` (kept incrementally, with
        checkpoints so that an index behind the reference is replayed from one)."""
        assert self._reference is not None
        if self._ref is None:
            self._ref = self._reference()
            self._checkpoints[0] = self._ref.snapshot()
        every = self.CHECKPOINT_EVERY
        if index >= self._ref_at:
            while self._ref_at < index:
                step = min(index, (self._ref_at // every + 1) * every)
                self._replay(self._ref, self._ref_at, step)
                self._ref_at = step
                if step % every == 0:
                    self._checkpoints[step] = self._ref.snapshot()
            return self._ref.snapshot()
        start = index // every * every
        scratch = self._reference()
        scratch.restore(self._checkpoints[start])
        self._replay(scratch, start, index)
        return scratch.snapshot()
