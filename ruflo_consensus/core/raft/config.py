"""Raft's timing and flow settings (:class:`RaftConfig`), checked when built."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RaftConfig"]


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Timing and flow settings. Defaults: election 150–300 ms, heartbeat 50 ms, 10 ms ticks."""

    tick_ms: int = 10
    election_timeout_min_ms: int = 150
    election_timeout_max_ms: int = 300
    heartbeat_ms: int = 50
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 8
    max_batch_entries: int = 64
    max_inflight_bytes: int = 4 << 20
    max_batch_bytes: int = 1 << 20
    max_uncommitted_entries: int = 10_000
    read_mode: str = "read-index"
    lease_drift_bound: float = 0.1
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 << 20
    snapshot_chunk_bytes: int = 64 << 10
    max_snapshot_bytes: int = 1 << 30
    max_learner_lag: int = 32

    def __post_init__(self) -> None:
        """Refuse a setting that is out of range or inconsistent (``ValueError``)."""
        if self.tick_ms <= 0:
            raise ValueError("tick_ms must be positive")
        if not 0 < self.heartbeat_ms < self.election_timeout_min_ms:
            raise ValueError("need 0 < heartbeat_ms < election_timeout_min_ms")
        if self.election_timeout_max_ms <= self.election_timeout_min_ms:
            raise ValueError("election_timeout_max_ms must exceed election_timeout_min_ms")
        if self.max_inflight < 1 or self.max_batch_entries < 1:
            raise ValueError("max_inflight and max_batch_entries must be at least 1")
        if self.max_inflight_bytes < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_inflight_bytes and max_batch_bytes must be at least 1")
        if self.max_uncommitted_entries < 1:
            raise ValueError("max_uncommitted_entries must be at least 1")
        if self.read_mode not in ("read-index", "lease"):
            raise ValueError("read_mode must be 'read-index' or 'lease'")
        if self.read_mode == "lease" and not self.check_quorum:
            raise ValueError("lease reads are only safe with check_quorum")
        if not 0.0 <= self.lease_drift_bound < 1.0:
            raise ValueError("lease_drift_bound must be in [0, 1)")
        if self.snapshot_entries < 0 or self.snapshot_bytes < 0:
            raise ValueError("snapshot_entries and snapshot_bytes must be >= 0 (0: off)")
        if self.snapshot_chunk_bytes < 1 or self.max_snapshot_bytes < 1:
            raise ValueError("snapshot_chunk_bytes and max_snapshot_bytes must be at least 1")
        if self.max_learner_lag < 0:
            raise ValueError("max_learner_lag must be >= 0")

    @property
    def election_ticks(self) -> int:
        """Minimum election timeout in ticks."""
        return max(1, self.election_timeout_min_ms // self.tick_ms)

    @property
    def election_ticks_max(self) -> int:
        """Maximum (exclusive) randomized election timeout in ticks."""
        return max(self.election_ticks + 1, self.election_timeout_max_ms // self.tick_ms)

    @property
    def heartbeat_ticks(self) -> int:
        """Heartbeat interval in ticks."""
        return max(1, self.heartbeat_ms // self.tick_ms)

    @property
    def lease_ticks(self) -> int:
        """How long a quorum's acknowledgement keeps a lease, on the leader's clock.

        Followers refuse votes until ``election_ticks`` of *their* ticks have passed since
        they heard the leader — but the first of those ticks may come right after the
        heartbeat, so only ``election_ticks − 1`` whole tick intervals are guaranteed. The
        lease is counted from the leader's tick before it sent the round, so it lasts at
        most ``lease_ticks`` whole intervals of the leader's clock. With clocks off by up
        to ±``lease_drift_bound`` (d) the lease must therefore end within
        ``(election_ticks − 1) · (1 − d) / (1 + d)`` of the leader's ticks. (With
        ``election_ticks`` in place of ``election_ticks − 1`` a lease could outlive the
        followers' refusal by up to one tick at the drift bound.)
        """
        d = self.lease_drift_bound
        return int((self.election_ticks - 1) * (1.0 - d) / (1.0 + d))
