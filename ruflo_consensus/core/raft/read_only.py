"""Linearizable reads without writing to the log: ReadIndex rounds and leases.

A leader serves a read at its commit index once it knows it still leads. It learns that
from a numbered heartbeat round: each ``AppendEntries`` heartbeat carries the round
number, each answer echoes it, and once a majority of the voters answered round ``r``
every read that waited for ``r`` may be served (:class:`PendingRead`). With
``read_mode="lease"`` the leader skips the round while a majority's answer to a recent
round still holds its lease (``RaftConfig.lease_ticks`` from when that round went out).

Until an entry of its own term commits, a new leader's commit index may be stale, so
reads arriving before then wait as :class:`WaitingRead` and are replayed afterwards.

A follower asks the leader for a read point (``ReadIndexRequest``) under a numbered
request id and keeps the caller's context until the answer arrives.

:class:`ReadOnly` holds this bookkeeping; the core decides when to start a round and
delivers the results (to its own ``Ready.reads`` or back to the follower that asked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import NodeId

__all__ = ["PendingRead", "ReadOnly", "WaitingRead"]


@dataclass(frozen=True, slots=True)
class WaitingRead:
    """A read the leader has accepted but not given a read point yet."""

    ctx: Any
    """The caller's context, for a read asked on this node (None for a follower's)."""
    origin: NodeId | None
    """The follower that asked, or None for a read asked on this node."""
    rid: int
    """The follower's request id (0 for a read asked on this node)."""


@dataclass(frozen=True, slots=True)
class PendingRead:
    """A read at ``index`` that may be served once a majority answered heartbeat ``round``."""

    round: int
    ctx: Any
    index: int
    origin: NodeId | None
    rid: int


class ReadOnly:
    """Heartbeat rounds, reads waiting for one, and a follower's outstanding requests."""

    __slots__ = ("next_id", "pending", "remote", "round", "round_needed", "round_tick", "waiting")

    def __init__(self) -> None:
        """No rounds sent, no reads waiting."""
        self.round = 0
        """The latest heartbeat round this node sent as leader (it only grows)."""
        self.round_tick: dict[int, int] = {}
        """The tick at which each round still of interest went out."""
        self.round_needed = False
        """A read waits for a round: the next ``Ready`` sends one at once."""
        self.pending: list[PendingRead] = []
        self.waiting: list[WaitingRead] = []
        self.remote: dict[int, Any] = {}
        """A follower's requests to the leader: request id → the caller's context."""
        self.next_id = 0

    # ----------------------------------------------------------------- leader

    def start_round(self, tick: int) -> int:
        """A heartbeat round goes out at ``tick``; return its number."""
        self.round += 1
        self.round_tick[self.round] = tick
        return self.round

    def forget_rounds(self) -> None:
        """A new term of leadership: acknowledgements of earlier rounds prove nothing now."""
        self.round_tick = {}

    def sent_at(self, round_: int) -> int | None:
        """The tick at which ``round_`` went out (None when unknown or forgotten)."""
        return self.round_tick.get(round_)

    def lease_holds(self, confirmed: int, now: int, lease_ticks: int) -> bool:
        """True while the latest round a majority answered (``confirmed``) went out less
        than ``lease_ticks`` before ``now``."""
        sent = self.round_tick.get(confirmed)
        return sent is not None and now < sent + lease_ticks

    def wait_for_commit(self, ctx: Any, origin: NodeId | None, rid: int) -> None:
        """Give the read a point once an entry of the leader's term has committed."""
        self.waiting.append(WaitingRead(ctx, origin, rid))

    def wait_for_round(self, ctx: Any, index: int, origin: NodeId | None, rid: int) -> None:
        """Serve a read at ``index`` once a majority answers the next round."""
        self.pending.append(PendingRead(self.round + 1, ctx, index, origin, rid))
        self.round_needed = True

    def confirm(self, confirmed: int) -> list[PendingRead]:
        """A majority answered every round up to ``confirmed``: take the reads it releases.

        Forgets the send ticks of rounds that neither a waiting read nor the lease can
        need any more.
        """
        released = [r for r in self.pending if r.round <= confirmed]
        keep = [r for r in self.pending if r.round > confirmed]
        self.pending = keep
        floor = min(confirmed, *(r.round for r in keep)) if keep else confirmed
        for r in [r for r in self.round_tick if r < floor]:
            del self.round_tick[r]
        return released

    def take_waiting(self) -> list[WaitingRead]:
        """The reads that waited for an entry of the term to commit, forgotten here."""
        waiting, self.waiting = self.waiting, []
        return waiting

    def take_all(self) -> list[WaitingRead]:
        """Every read not served yet (pending ones first), forgotten here: leadership ended."""
        out = [WaitingRead(r.ctx, r.origin, r.rid) for r in self.pending] + self.waiting
        self.pending = []
        self.waiting = []
        return out

    # ----------------------------------------------------------------- follower

    def ask(self, ctx: Any) -> int:
        """Remember ``ctx`` under a new request id to send to the leader; return the id."""
        self.next_id += 1
        self.remote[self.next_id] = ctx
        return self.next_id

    def answered(self, rid: int) -> Any:
        """The context of request ``rid`` (None when unknown), forgotten here."""
        return self.remote.pop(rid, None)

    def abandon(self) -> list[Any]:
        """The contexts of every request still waiting for the leader, forgotten here."""
        contexts = list(self.remote.values())
        self.remote = {}
        return contexts
