"""Settings of one simulated run, and how to say them again on the command line."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace

from ..topology import KINDS, Topology, TopologyError, build_topology, load_topology

__all__ = ["ALL_FAULTS", "FAULT_DESCRIPTIONS", "SimConfig", "SimConfigError", "parse_faults"]

FAULT_DESCRIPTIONS: dict[str, str] = {
    "drop": "links lose messages (a low base rate, with bursts of heavy loss)",
    "dup": "links deliver some messages twice",
    "reorder": "bursts of extra jitter so later messages overtake earlier ones",
    "partition": "symmetric partitions: the cluster splits into two sides",
    "oneway": "one-way partitions: a→b is cut while b→a still works",
    "crash": "a node crashes (volatile state lost, persisted log and term kept) and restarts",
    "pause": "a node stops (like SIGSTOP) and later resumes with its inbox queued",
    "drift": "a node's clock runs fast or slow (ticks arrive at a skewed rate)",
    "transfer": "an operator hands leadership to a random node (refused if it is behind)",
    "disk-lose": "a node loses power: every WAL write it had not fsynced is lost",
    "disk-torn": "a node loses power in the middle of a WAL write: the last record is torn",
    "disk-read-error": "a node loses power and its disk fails to read on restart: it stays "
    "down until a later attempt reads it",
    "leader-slow": "the leader's clock runs slow by the drift bound and everyone else's "
    "fast, while it is cut off from them (the worst case for leases)",
    "membership": "an operator removes a voter (sometimes the leader) while the cluster "
    "serves, and later adds it back as a learner, promoted once it has caught up",
}
ALL_FAULTS: tuple[str, ...] = tuple(FAULT_DESCRIPTIONS)
WORKLOADS: tuple[str, ...] = ("kv", "federation")
BACKENDS: tuple[str, ...] = ("raft", "crdt")
READ_MODES: tuple[str, ...] = ("read-index", "lease", "log")
LATENCY_KINDS: tuple[str, ...] = ("exponential", "uniform", "pareto", "fixed")


class SimConfigError(ValueError):
    """A simulation setting is out of range or unknown."""


def parse_faults(text: str) -> tuple[str, ...]:
    """Parse ``"all"``, ``"none"`` or a comma list such as ``"crash,partition"``."""
    text = text.strip()
    if text in ("all", "mixed"):
        return ALL_FAULTS
    if text in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in FAULT_DESCRIPTIONS]
    if unknown:
        raise SimConfigError(
            f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(ALL_FAULTS)}, all, none"
        )
    return names


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a run. The same config and seed replay bit for bit."""

    seed: int = 0
    nodes: int = 5
    duration_s: float = 30.0
    faults: tuple[str, ...] = ALL_FAULTS
    clients: int = 5
    keys: int = 5
    workload: str = "kv"
    backend: str = "raft"
    topology: str = "mesh"
    reads: str = "read-index"
    # network
    latency_min_ms: float = 0.5
    latency_mean_ms: float = 2.0
    latency: str = "exponential"
    drop_rate: float = 0.01
    dup_rate: float = 0.01
    # nemesis
    nemesis_interval_s: tuple[float, float] = (0.3, 1.5)
    fault_duration_s: tuple[float, float] = (0.2, 3.0)
    max_drift: float = 0.1
    quiet_tail_s: float = 3.0
    # disks and snapshots (Raft)
    disk_sync_ms: tuple[float, float] = (0.05, 1.0)
    disk_retry_s: float = 0.5
    wal_segment_bytes: int = 16 << 10
    snapshot_entries: int = 64
    snapshot_chunk_bytes: int = 256
    # clients
    client_timeout_ms: float = 250.0
    client_give_up_ms: float = 4000.0
    think_ms: float = 10.0
    # checks
    invariant_interval_s: float = 0.5
    check_timeout_s: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.nodes > 64:
            raise SimConfigError("--nodes must be between 1 and 64")
        if not 0 < self.duration_s <= 3600:
            raise SimConfigError("--duration must be in (0, 3600] seconds")
        if self.clients < 1 or self.clients > 256:
            raise SimConfigError("--clients must be between 1 and 256")
        if self.keys < 1:
            raise SimConfigError("--keys must be at least 1")
        if self.workload not in WORKLOADS:
            raise SimConfigError(
                f"unknown workload {self.workload!r}; choose from {', '.join(WORKLOADS)}"
            )
        if self.latency not in LATENCY_KINDS:
            raise SimConfigError(
                f"unknown latency distribution {self.latency!r}; "
                f"choose from {', '.join(LATENCY_KINDS)}"
            )
        if self.reads not in READ_MODES:
            raise SimConfigError(
                f"unknown read mode {self.reads!r}; choose from {', '.join(READ_MODES)}"
            )
        if self.backend not in BACKENDS:
            raise SimConfigError(
                f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}"
            )
        for f in self.faults:
            if f not in FAULT_DESCRIPTIONS:
                raise SimConfigError(f"unknown fault {f!r}")
        if self.backend == "crdt" and self.workload != "kv":
            raise SimConfigError(
                "the crdt backend runs the kv workload only (budgets with a "
                "hard cap cannot be CRDTs: see docs/crdt.md)"
            )
        if self.seed < 0:
            raise SimConfigError("--seed must be a non-negative integer")
        if self.snapshot_entries < 0:
            raise SimConfigError("--snapshot-entries must be >= 0 (0: never snapshot)")
        if self.snapshot_chunk_bytes < 1:
            raise SimConfigError("--snapshot-chunk must be at least 1 byte")
        if not 0 < self.max_drift < 1:
            raise SimConfigError("--max-drift must be in (0, 1)")

    def with_seed(self, seed: int) -> SimConfig:
        """The same config with another seed."""
        return replace(self, seed=seed)

    def replay_command(self) -> str:
        """The exact CLI command that replays this run."""
        default = SimConfig()
        parts = ["ruflo-consensus", "simulate", "--seed", str(self.seed)]
        if self.nodes != default.nodes:
            parts += ["--nodes", str(self.nodes)]
        if self.duration_s != default.duration_s:
            parts += ["--duration", f"{self.duration_s:g}"]
        if self.faults != default.faults:
            parts += ["--faults", ",".join(self.faults) or "none"]
        if self.clients != default.clients:
            parts += ["--clients", str(self.clients)]
        if self.keys != default.keys:
            parts += ["--keys", str(self.keys)]
        if self.workload != default.workload:
            parts += ["--workload", self.workload]
        if self.latency != default.latency:
            parts += ["--latency", self.latency]
        if self.reads != default.reads:
            parts += ["--reads", self.reads]
        if self.backend != default.backend:
            parts += ["--backend", self.backend]
        if self.topology != default.topology:
            parts += ["--topology", shlex.quote(self.topology)]
        if self.snapshot_entries != default.snapshot_entries:
            parts += ["--snapshot-entries", str(self.snapshot_entries)]
        if self.snapshot_chunk_bytes != default.snapshot_chunk_bytes:
            parts += ["--snapshot-chunk", str(self.snapshot_chunk_bytes)]
        if self.max_drift != default.max_drift:
            parts += ["--max-drift", f"{self.max_drift:g}"]
        return " ".join(parts)

    def build_topology(self) -> Topology:
        """The run's topology: a kind name built over ``nodes``, or a TOML spec file."""
        try:
            if self.topology in KINDS:
                return build_topology(self.topology, self.nodes)
            topo = load_topology(self.topology)
        except TopologyError as exc:
            raise SimConfigError(str(exc)) from None
        if len(topo.nodes) != self.nodes:
            raise SimConfigError(
                f"{self.topology} has {len(topo.nodes)} nodes but --nodes is {self.nodes}"
            )
        if not topo.connected():
            raise SimConfigError(f"{self.topology} is not connected")
        return topo
