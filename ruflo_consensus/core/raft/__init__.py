"""Raft: a sans-IO core that tolerates crash faults of a minority (2f + 1 nodes).

Where things are (the seams follow etcd-io/raft's):

- :mod:`.messages` — the wire messages, ``RAFT_MESSAGES``, :func:`entry_size`;
- :mod:`.config` — :class:`RaftConfig`, the timing and flow settings;
- :mod:`.progress` — the leader's per-follower :class:`~.progress.Progress` and the
  quorum counting (commit index, heartbeat rounds, votes);
- :mod:`.log` — :class:`~.log.RaftLog`, the in-memory log with its snapshot offset;
- :mod:`.read_only` — ReadIndex rounds, pending reads as named records, the lease;
- :mod:`.snapshot` — when to snapshot, chunked ``InstallSnapshot`` send and receive;
- :mod:`.membership` — configurations, single-server changes, the configuration history;
- :mod:`.state` — the state every role shares; :mod:`.leader`, :mod:`.election` and
  :mod:`.follower` — one step function per role; :mod:`.core` — :class:`RaftCore`, the
  events in and the effects out; :mod:`.factory` — :class:`RaftCoreFactory`, how the
  drivers build one from storage.

See ``docs/raft.md``.
"""

from .config import RaftConfig
from .core import RaftCore
from .factory import RaftCoreFactory
from .membership import ConfigHistory, Configuration, apply_change, configuration_problem
from .messages import (
    RAFT_MESSAGES,
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    VoteResponse,
    entry_size,
)

__all__ = [
    "RAFT_MESSAGES",
    "AppendEntries",
    "AppendResponse",
    "ConfigHistory",
    "Configuration",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "RaftConfig",
    "RaftCore",
    "RaftCoreFactory",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "RequestVote",
    "TimeoutNow",
    "VoteResponse",
    "apply_change",
    "configuration_problem",
    "entry_size",
]
