"""The deterministic cluster simulator: one seed replays a whole run bit for bit."""

from .config import ALL_FAULTS, SimConfig, SimConfigError, parse_faults
from .invariants import InvariantViolation, RaftInvariants
from .raft_sim import RaftSimulation, SimResult, default_core_factory
from .report import SimSummary, run_simulation, summarize
from .sweep import SweepResult, run_sweep

__all__ = [
    "ALL_FAULTS",
    "InvariantViolation",
    "RaftInvariants",
    "RaftSimulation",
    "SimConfig",
    "SimConfigError",
    "SimResult",
    "SimSummary",
    "SweepResult",
    "default_core_factory",
    "parse_faults",
    "run_simulation",
    "run_sweep",
    "summarize",
]
