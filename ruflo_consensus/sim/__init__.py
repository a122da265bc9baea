"""The deterministic cluster simulator: one seed replays a whole run bit for bit."""

from .config import ALL_FAULTS, SimConfig, SimConfigError, parse_faults
from .invariants import InvariantViolation, RaftInvariants
from .raft_sim import RaftSimulation, SimResult, default_core_factory
from .report import SimSummary, run_simulation, summarize
from .sweep import SweepResult, run_sweep
from .workload import (
    KVWorkload,
    ReplicaState,
    SimWorkload,
    WorkloadFactory,
    kv_workload,
)

__all__ = [
    "ALL_FAULTS",
    "InvariantViolation",
    "KVWorkload",
    "RaftInvariants",
    "RaftSimulation",
    "ReplicaState",
    "SimConfig",
    "SimConfigError",
    "SimResult",
    "SimSummary",
    "SimWorkload",
    "SweepResult",
    "WorkloadFactory",
    "default_core_factory",
    "kv_workload",
    "parse_faults",
    "run_simulation",
    "run_sweep",
    "summarize",
]
