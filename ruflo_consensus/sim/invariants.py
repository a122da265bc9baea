"""Raft's safety properties, checked against the whole simulated cluster while it runs.

The simulator sees every node at once, which no real node can: it uses that view to
check the four properties of the Raft paper (Figure 3) as the run goes, and stops at the
first violation with a report of what broke, where and when.

- **election safety**: at most one leader per term;
- **log matching**: two logs with an entry of the same index and term are identical up to it;
- **leader completeness**: a leader's log holds every entry committed before its term;
- **state machine safety**: no two nodes apply different entries at the same index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.base import Entry, NodeId

__all__ = ["InvariantViolation", "RaftInvariants"]


@dataclass
class InvariantViolation(Exception):
    """The first broken invariant of a run."""

    invariant: str
    time_us: int
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} violated at t={self.time_us / 1e6:.6f}s: {self.detail}"


def _describe(entry: Entry | None) -> str:
    if entry is None:
        return "nothing"
    p = entry.proposal
    what = "no-op" if p is None else f"{p.client}#{p.seq} {p.command!r}"
    return f"[index {entry.index}, term {entry.term}: {what}]"


class RaftInvariants:
    """Incremental checker of Raft's safety properties over a simulated cluster."""

    NAMES = ("election-safety", "log-matching", "leader-completeness", "state-machine-safety")

    def __init__(self) -> None:
        self.leaders: dict[int, NodeId] = {}
        self.applied: list[Entry] = [Entry(0, 0, None)]
        self.applied_by: list[NodeId] = [""]
        self.checks: dict[str, int] = dict.fromkeys(self.NAMES, 0)

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
        for i in range(1, known + 1):
            mine = log[i] if i < len(log) else None
            if mine is None or mine != self.applied[i]:
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
            if self.applied[i] != entry:
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
        """Log matching across every pair of nodes (crashed nodes' persisted logs included)."""
        self.checks["log-matching"] += 1
        names = list(logs)
        for a_pos, a in enumerate(names):
            la = logs[a]
            for b in names[a_pos + 1 :]:
                lb = logs[b]
                i = min(len(la), len(lb)) - 1
                while i > 0 and la[i].term != lb[i].term:
                    i -= 1
                if i > 0 and la[: i + 1] != lb[: i + 1]:
                    j = next(k for k in range(i + 1) if la[k] != lb[k])
                    raise InvariantViolation(
                        "log-matching",
                        now,
                        f"{a} and {b} agree on term {la[i].term} at index {i} but differ at "
                        f"index {j}: {a} has {_describe(la[j])}, {b} has {_describe(lb[j])}",
                    )
