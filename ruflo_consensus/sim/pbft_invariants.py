"""PBFT's safety and liveness properties, checked over the honest replicas while a run goes.

The simulator knows which replicas are Byzantine; the properties speak of the others only
(a Byzantine replica may execute anything it likes):

- **agreement** — no two honest replicas execute different requests at the same sequence
  number (a batch is compared whole: the same requests in the same order);
- **checkpoint agreement** — honest replicas that checkpoint the same sequence number
  hold the same state digest there;
- **state transfer** — a state an honest replica installs from its peers is the state the
  honest replicas had at that checkpoint;
- **liveness after GST** — once the network has healed, every batch an honest replica
  executed is executed by every honest replica (checked at the end of the run, for
  batches executed at least a grace period before the end).
"""

from __future__ import annotations

from collections.abc import Mapping

from .invariants import InvariantViolation

__all__ = ["Batch", "PbftInvariants"]

Batch = tuple[tuple[str | None, int, bytes], ...]
"""What a sequence number executed: ``(client, timestamp, canonical op bytes)`` per request."""


def _show(batch: Batch) -> str:
    if not batch:
        return "[null request]"
    shown = ", ".join(f"{c}#{t}" for c, t, _ in batch[:4])
    more = f" +{len(batch) - 4}" if len(batch) > 4 else ""
    return f"[{shown}{more}]"


class PbftInvariants:
    """Incremental checker of PBFT's properties over a simulated cluster's honest replicas."""

    NAMES = ("agreement", "checkpoint-agreement", "state-transfer", "liveness")

    def __init__(self, honest: set[str]) -> None:
        self.honest = honest
        self.executed: dict[int, tuple[Batch, str, int]] = {}
        self.checkpoints: dict[int, tuple[bytes, str]] = {}
        self.checks: dict[str, int] = dict.fromkeys(self.NAMES, 0)

    def on_execute(self, node: str, seq: int, batch: Batch, now: int) -> None:
        """An honest ``node`` executed ``batch`` at ``seq``: it must match every other one."""
        if node not in self.honest:
            return
        self.checks["agreement"] += 1
        seen = self.executed.get(seq)
        if seen is None:
            self.executed[seq] = (batch, node, now)
        elif seen[0] != batch:
            raise InvariantViolation(
                "agreement",
                now,
                f"honest {node} executed {_show(batch)} at seq {seq} but honest {seen[1]} "
                f"executed {_show(seen[0])} there",
            )

    def on_checkpoint(self, node: str, seq: int, digest: bytes, now: int) -> None:
        """An honest ``node`` took a checkpoint: same digest as every other honest one."""
        if node not in self.honest:
            return
        self.checks["checkpoint-agreement"] += 1
        seen = self.checkpoints.get(seq)
        if seen is None:
            self.checkpoints[seq] = (digest, node)
        elif seen[0] != digest:
            raise InvariantViolation(
                "checkpoint-agreement",
                now,
                f"honest {node} has state {digest.hex()[:12]} at checkpoint {seq}, "
                f"honest {seen[1]} has {seen[0].hex()[:12]}",
            )

    def on_transfer(self, node: str, seq: int, digest: bytes, now: int) -> None:
        """An honest ``node`` installed a peer's state at ``seq``: it must be the honest one."""
        if node not in self.honest:
            return
        self.checks["state-transfer"] += 1
        seen = self.checkpoints.get(seq)
        if seen is not None and seen[0] != digest:
            raise InvariantViolation(
                "state-transfer",
                now,
                f"honest {node} installed state {digest.hex()[:12]} at {seq}; the honest "
                f"replicas' state there is {seen[0].hex()[:12]} ({seen[1]})",
            )

    def check_liveness(self, last_executed: Mapping[str, int], cutoff: int, now: int) -> None:
        """Every batch an honest replica executed by ``cutoff`` is executed by all of them.

        ``last_executed`` holds the honest replicas that are up at the end, with the highest
        sequence number each has executed (or installed by state transfer).
        """
        self.checks["liveness"] += 1
        due = [seq for seq, (_, _, at) in self.executed.items() if at <= cutoff]
        if not due or not last_executed:
            return
        top = max(due)
        lagging = sorted(n for n, done in last_executed.items() if done < top)
        if lagging:
            who = ", ".join(f"{n} at {last_executed[n]}" for n in lagging)
            raise InvariantViolation(
                "liveness",
                now,
                f"seq {top} was executed by honest {self.executed[top][1]} at "
                f"t={self.executed[top][2] / 1e6:.3f}s but honest {who} never got there",
            )
