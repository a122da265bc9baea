"""What a leader knows about each follower, and how quorums are counted.

A leader keeps one :class:`Progress` per other member: how far the follower's log is
known to match (``match``), what to send it next (``next``), and in which of three
states replication to it is:

- ``PROBE``: the leader does not know where the logs diverge; it sends one
  ``AppendEntries`` at a time and backs off on each rejection;
- ``REPLICATE``: the logs match up to ``match``; appends are pipelined, up to
  ``max_inflight`` messages or ``max_inflight_bytes`` bytes unacknowledged;
- ``SNAPSHOT``: the entries the follower needs next were compacted away; it is sent the
  snapshot in chunks instead.

The quorum helpers below are the only places that count a majority: the commit index
(the highest index a majority holds), the latest heartbeat round a majority answered,
and the votes of an election.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..base import NodeId, Snapshot

__all__ = ["Progress", "ProgressState", "granted_votes", "quorum_value"]


class ProgressState(enum.Enum):
    """How the leader replicates to one follower (see the module docstring)."""

    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2  # the follower needs entries the leader compacted: InstallSnapshot chunks


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower."""

    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = False
    match_at_heartbeat: int = -1
    acked_round: int = 0
    inflight: deque[tuple[int, int]] = field(default_factory=deque)
    """Unacknowledged appends in REPLICATE: ``(last index, bytes)`` of each, oldest first."""
    inflight_bytes: int = 0
    # SNAPSHOT state: which snapshot is being sent, how many of its bytes the follower
    # acknowledged, and how many heartbeat intervals passed without progress
    snapshot: Snapshot | None = None
    snap_offset: int = 0
    snap_offset_at_heartbeat: int = -1
    snap_stalls: int = 0

    def _reset(self, state: ProgressState) -> None:
        """Enter ``state``: resend from after ``match``, forget what was in flight."""
        self.state = state
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.inflight_bytes = 0
        self.snapshot = None
        self.snap_offset = 0
        self.snap_offset_at_heartbeat = -1
        self.snap_stalls = 0

    def become_probe(self) -> None:
        """Where the logs diverge is unknown again: one probe at a time."""
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        """The logs match through ``match``: pipeline appends from there."""
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot: Snapshot) -> None:
        """Send ``snapshot`` from its first byte."""
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot = snapshot

    def paused(self, max_inflight: int, max_bytes: int) -> bool:
        """True when no append may go out now (a probe or the pipeline is full)."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= max_inflight or self.inflight_bytes >= max_bytes

    def add_inflight(self, last: int, size: int) -> None:
        """An append ending at ``last`` and ``size`` bytes long went out."""
        self.inflight.append((last, size))
        self.inflight_bytes += size

    def free_to(self, index: int) -> None:
        """The follower acknowledged through ``index``: those appends are no longer in flight."""
        while self.inflight and self.inflight[0][0] <= index:
            self.inflight_bytes -= self.inflight.popleft()[1]

    def free_one(self) -> None:
        """Let one more append out (an answer that acknowledged nothing new came back)."""
        if self.inflight:
            self.inflight_bytes -= self.inflight.popleft()[1]

    def snapshot_heartbeat(self, latest: Snapshot) -> bool:
        """A heartbeat interval passed while sending a snapshot; True: resend the chunk.

        No progress for one interval: the chunk or its answer was lost, so the chunk goes
        again. No progress for two: the follower lost what it had received (it restarted,
        or another leader's chunks replaced it), so the transfer starts over with
        ``latest``, the leader's newest snapshot.
        """
        resend = self.snap_offset == self.snap_offset_at_heartbeat
        if resend:
            self.snap_stalls += 1
            if self.snap_stalls >= 2:
                self.become_snapshot(latest)
        else:
            self.snap_stalls = 0
        self.snap_offset_at_heartbeat = self.snap_offset
        return resend


def quorum_value(values: Iterable[int], quorum: int) -> int:
    """The largest value that at least ``quorum`` of ``values`` (one per voter) reach.

    With each voter's match index this is the index a majority holds; with each voter's
    acknowledged heartbeat round, the latest round a majority answered.
    """
    ordered = sorted(values, reverse=True)
    return ordered[quorum - 1]


def granted_votes(votes: Mapping[NodeId, bool], voters: Iterable[NodeId]) -> int:
    """How many of ``voters`` granted their vote in ``votes``."""
    return sum(1 for node in voters if votes.get(node, False))
