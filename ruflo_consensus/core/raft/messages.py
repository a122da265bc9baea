"""The messages Raft nodes exchange, and the wire size of a log entry.

Every message is a frozen dataclass on :class:`~ruflo_consensus.core.base.Message` (which
carries ``src`` and ``dst``); :data:`RAFT_MESSAGES` lists them for the codec and for the
core's check that what it is given is a Raft message at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ..base import Entry, Message, NodeId

__all__ = [
    "RAFT_MESSAGES",
    "AppendEntries",
    "AppendResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "RequestVote",
    "TimeoutNow",
    "VoteResponse",
    "entry_size",
]


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    """Ask for a vote at ``term`` (a pre-vote proposes ``term`` without adopting it)."""

    term: int
    last_index: int
    last_term: int
    pre_vote: bool
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    """Answer to :class:`RequestVote`."""

    term: int
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """Replicate ``entries`` after ``(prev_index, prev_term)``; also the heartbeat."""

    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    """Answer to :class:`AppendEntries`.

    On success ``index`` is the last index the follower now matches. On rejection
    ``index`` is the rejected ``prev_index`` and ``hint_index``/``hint_term`` say where the
    follower's log diverges (first index of its conflicting term, and that term; term 0
    when its log is simply shorter).
    """

    term: int
    success: bool
    index: int
    hint_index: int
    hint_term: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leader → chosen successor: start an election now (leadership transfer)."""

    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest(Message):
    """Follower → leader: confirm leadership and tell me a read point for ``ctx``."""

    term: int
    ctx: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse(Message):
    """Leader → follower: the read point for ``ctx`` (-1: refused)."""

    term: int
    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """Leader → follower: one chunk of the snapshot at ``(index, snap_term)``.

    ``data`` holds bytes ``[offset, offset + len(data))`` of the snapshot's ``total``
    bytes; ``done`` marks the last chunk. Every chunk repeats the snapshot's identity and
    membership so that the follower can tell chunks of different snapshots apart.
    """

    term: int
    index: int
    snap_term: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    offset: int
    total: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse(Message):
    """Follower → leader: ``received`` bytes of the snapshot at ``index`` have arrived.

    With ``done`` the follower holds (durably) every entry through ``index`` — it
    installed the snapshot, or it had already committed that far.
    """

    term: int
    index: int
    received: int
    done: bool


RAFT_MESSAGES: tuple[type[Message], ...] = (
    RequestVote,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
)


def entry_size(entry: Entry) -> int:
    """Bytes an entry takes on the wire (its msgpack encoding), for flow control."""
    p = entry.proposal
    if p is None:
        c = entry.conf
        if c is None:
            return 8
        return 24 + len(c.node) + sum(len(n) + 1 for n in c.voters + c.learners)
    try:
        return 16 + len(msgpack.packb([p.client, p.seq, p.command], use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return 16 + len(repr(p.command))
