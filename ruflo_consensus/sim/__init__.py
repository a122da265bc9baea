"""The deterministic cluster simulator: one seed replays a whole run bit for bit."""

from .config import ALL_FAULTS, SimConfig, SimConfigError, parse_faults
from .invariants import InvariantViolation, RaftInvariants
from .report import SimSummary, run_simulation, summarize
from .simulator import SimResult, Simulation, default_core_factory
from .sweep import SweepResult, run_sweep

__all__ = [
    "ALL_FAULTS",
    "InvariantViolation",
    "RaftInvariants",
    "SimConfig",
    "SimConfigError",
    "SimResult",
    "SimSummary",
    "Simulation",
    "SweepResult",
    "default_core_factory",
    "parse_faults",
    "run_simulation",
    "run_sweep",
    "summarize",
]
