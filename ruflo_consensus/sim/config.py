"""Settings of one simulated run, and how to say them again on the command line."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields, replace
from typing import Any

from ..topology import KINDS, Topology, TopologyError, build_topology, load_topology

__all__ = [
    "ALL_FAULTS",
    "BYZANTINE_BEHAVIOURS",
    "BYZANTINE_DESCRIPTIONS",
    "ENGINE_FAULTS",
    "FAULT_DESCRIPTIONS",
    "SimConfig",
    "SimConfigError",
    "backend_faults",
    "parse_behaviours",
    "parse_faults",
    "parse_setting",
    "parse_span",
    "settable_fields",
]

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
# The engine's network, clock and node faults, which every backend's simulation takes; the
# rest of FAULT_DESCRIPTIONS are Raft's own (leader transfers, its WAL's disk faults, …).
ENGINE_FAULTS: tuple[str, ...] = (
    "drop",
    "dup",
    "reorder",
    "partition",
    "oneway",
    "crash",
    "pause",
    "drift",
)
WORKLOADS: tuple[str, ...] = ("kv", "federation")
BACKENDS: tuple[str, ...] = ("raft", "crdt", "pbft")
BYZANTINE_DESCRIPTIONS: dict[str, str] = {
    "silent": "sends nothing at all (votes, replies, checkpoints: all withheld)",
    "equivocate": "as primary, sends different pre-prepares to two halves of the backups "
    "and votes for both; pushes for views with a colluding primary",
    "forge": "fabricates pre-prepares, votes, requests and commit certificates in other "
    "replicas' and clients' names (signatures that cannot verify)",
    "replay": "re-sends old messages it saw (requests, votes, view changes) to others",
    "conflict": "casts conflicting prepares and commits (a different digest to half the replicas)",
    "lie-checkpoint": "announces wrong checkpoint digests, corrupts the state it serves, "
    "claims a checkpoint it cannot prove in view changes",
    "censor": "as primary, ignores one client's requests (as backup, does not forward them)",
    "wrong-reply": "answers clients with made-up results",
}
BYZANTINE_BEHAVIOURS: tuple[str, ...] = tuple(BYZANTINE_DESCRIPTIONS)
READ_MODES: tuple[str, ...] = ("read-index", "lease", "log", "fast")
LATENCY_KINDS: tuple[str, ...] = ("exponential", "uniform", "pareto", "fixed")


def backend_faults(backend: str) -> tuple[str, ...]:
    """The faults a backend's simulation can inject: what ``--faults all`` means for it."""
    return ALL_FAULTS if backend == "raft" else ENGINE_FAULTS


class SimConfigError(ValueError):
    """A simulation setting is out of range or unknown."""


def parse_behaviours(text: str) -> tuple[str, ...]:
    """Parse ``"all"`` or a comma list of Byzantine behaviours such as ``"silent,forge"``."""
    text = text.strip()
    if text == "all":
        return BYZANTINE_BEHAVIOURS
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in BYZANTINE_DESCRIPTIONS]
    if unknown or not names:
        raise SimConfigError(
            f"unknown Byzantine behaviour(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(BYZANTINE_BEHAVIOURS)}, all"
        )
    return names


def parse_span(text: str, name: str) -> tuple[float, float]:
    """Parse ``"LO:HI"`` seconds (``0 < LO <= HI``), e.g. ``"0.1:0.5"``."""
    try:
        lo_s, hi_s = text.split(":", 1)
        lo, hi = float(lo_s), float(hi_s)
    except ValueError:
        raise SimConfigError(f"{name} takes LO:HI seconds, got {text!r}") from None
    if not 0 < lo <= hi:
        raise SimConfigError(f"{name} needs 0 < LO <= HI seconds, got {text!r}")
    return lo, hi


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
    # pbft: how many replicas are Byzantine (None: f) and the behaviours they draw from
    byzantine: int | None = None
    behaviours: tuple[str, ...] = BYZANTINE_BEHAVIOURS
    # pbft: run more than f Byzantine replicas on purpose (a run that may fail: see
    # :meth:`SimConfig.over_f_warning`); without it such a config is refused
    allow_over_f: bool = False

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
        supported = backend_faults(self.backend)
        if self.faults == ALL_FAULTS:  # "all": every fault this backend has
            object.__setattr__(self, "faults", supported)
        unsupported = [f for f in self.faults if f not in supported]
        if unsupported:
            raise SimConfigError(
                f"the {self.backend} backend cannot inject {', '.join(unsupported)}; "
                f"its faults are {', '.join(supported)}"
            )
        if self.backend == "crdt" and self.workload != "kv":
            raise SimConfigError(
                "the crdt backend runs the kv workload only (budgets with a "
                "hard cap cannot be CRDTs: see docs/crdt.md)"
            )
        if self.seed < 0:
            raise SimConfigError("--seed must be a non-negative integer")
        for name, (lo, hi) in (
            ("--nemesis-interval", self.nemesis_interval_s),
            ("--fault-duration", self.fault_duration_s),
        ):
            if not 0 < lo <= hi:
                raise SimConfigError(f"{name} needs 0 < LO <= HI seconds")
        if self.quiet_tail_s < 0:
            raise SimConfigError("--quiet-tail must not be negative")
        if self.byzantine is not None and not 0 <= self.byzantine <= self.nodes:
            raise SimConfigError("--byzantine must be between 0 and the number of nodes")
        if self.over_f_warning() is not None and not self.allow_over_f:
            tolerated = (self.nodes - 1) // 3
            raise SimConfigError(
                f"--byzantine {self.byzantine} exceeds f = {tolerated}, what PBFT tolerates with "
                f"{self.nodes} nodes (n >= 3f + 1): its safety is not guaranteed; add "
                "--allow-over-f to run it anyway, e.g. to watch it break"
            )
        parse_behaviours(",".join(self.behaviours))  # raises on an unknown one
        if self.reads == "fast" and self.backend != "pbft":
            raise SimConfigError("--reads fast is PBFT's read-only fast path (--backend pbft)")
        if self.backend == "pbft" and self.workload != "kv":
            raise SimConfigError("the pbft backend runs the kv workload for now")
        if self.snapshot_entries < 0:
            raise SimConfigError("--snapshot-entries must be >= 0 (0: never snapshot)")
        if self.snapshot_chunk_bytes < 1:
            raise SimConfigError("--snapshot-chunk must be at least 1 byte")
        if not 0 < self.max_drift < 1:
            raise SimConfigError("--max-drift must be in (0, 1)")
        self._check_settings()

    def _check_settings(self) -> None:
        """Ranges of the settings given with ``--set`` (see :func:`parse_setting`)."""
        if not 0 <= self.latency_min_ms <= self.latency_mean_ms:
            raise SimConfigError("latency_min_ms must be in [0, latency_mean_ms]")
        for name in ("drop_rate", "dup_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise SimConfigError(f"{name} must be in [0, 1)")
        lo, hi = self.disk_sync_ms
        if not 0 <= lo <= hi:
            raise SimConfigError("disk_sync_ms needs 0 <= LO <= HI")
        if self.wal_segment_bytes < 1:
            raise SimConfigError("wal_segment_bytes must be at least 1")
        if self.think_ms < 0:
            raise SimConfigError("think_ms must not be negative")
        for name in (
            "disk_retry_s",
            "client_timeout_ms",
            "invariant_interval_s",
            "check_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise SimConfigError(f"{name} must be positive")
        if self.client_give_up_ms < self.client_timeout_ms:
            raise SimConfigError("client_give_up_ms must be at least client_timeout_ms")

    def over_f_warning(self) -> str | None:
        """What a PBFT run with more Byzantine replicas than ``f`` does not promise, or None.

        Such a config is refused unless ``allow_over_f``; the report of one that runs
        carries this sentence.
        """
        f = (self.nodes - 1) // 3
        if self.backend != "pbft" or self.byzantine is None or self.byzantine <= f:
            return None
        return (
            f"{self.byzantine} Byzantine replicas exceed f = {f} for {self.nodes} nodes "
            "(--allow-over-f): safety is not guaranteed past f, so a failing seed is no bug"
        )

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
            parts += ["--duration", _num(self.duration_s)]
        if self.faults != backend_faults(self.backend):
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
        if self.quiet_tail_s != default.quiet_tail_s:
            parts += ["--quiet-tail", _num(self.quiet_tail_s)]
        if self.nemesis_interval_s != default.nemesis_interval_s:
            parts += ["--nemesis-interval", _span(self.nemesis_interval_s)]
        if self.fault_duration_s != default.fault_duration_s:
            parts += ["--fault-duration", _span(self.fault_duration_s)]
        if self.byzantine != default.byzantine:
            parts += ["--byzantine", str(self.byzantine)]
        if self.behaviours != default.behaviours:
            parts += ["--behaviours", ",".join(self.behaviours)]
        if self.allow_over_f:
            parts += ["--allow-over-f"]
        if self.snapshot_entries != default.snapshot_entries:
            parts += ["--snapshot-entries", str(self.snapshot_entries)]
        if self.snapshot_chunk_bytes != default.snapshot_chunk_bytes:
            parts += ["--snapshot-chunk", str(self.snapshot_chunk_bytes)]
        if self.max_drift != default.max_drift:
            parts += ["--max-drift", _num(self.max_drift)]
        for f in fields(self):  # the settings without an option of their own
            value = getattr(self, f.name)
            if f.name not in _OWN_OPTIONS and value != getattr(default, f.name):
                parts += ["--set", f"{f.name}={_format_setting(value)}"]
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


# SimConfig fields that have a command-line option of their own; every other field is
# given with ``--set NAME=VALUE``, so a replay command can say any config exactly.
_OWN_OPTIONS = frozenset(
    {
        "seed",
        "nodes",
        "duration_s",
        "faults",
        "clients",
        "keys",
        "workload",
        "backend",
        "topology",
        "reads",
        "latency",
        "quiet_tail_s",
        "nemesis_interval_s",
        "fault_duration_s",
        "byzantine",
        "behaviours",
        "allow_over_f",
        "snapshot_entries",
        "snapshot_chunk_bytes",
        "max_drift",
    }
)


def _num(x: float) -> str:
    """``x`` as short as it reads back exactly (``3`` for 3.0, full precision otherwise)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


def _span(span: tuple[float, float]) -> str:
    return f"{_num(span[0])}:{_num(span[1])}"


def _format_setting(value: Any) -> str:
    if isinstance(value, tuple):
        return _span(value)
    if isinstance(value, float):
        return _num(value)
    return str(value)


def settable_fields() -> dict[str, Any]:
    """The fields ``--set`` takes, with their defaults (which give their types)."""
    default = SimConfig()
    return {
        f.name: getattr(default, f.name) for f in fields(SimConfig) if f.name not in _OWN_OPTIONS
    }


def parse_setting(text: str) -> tuple[str, Any]:
    """Parse one ``--set NAME=VALUE`` (e.g. ``client_timeout_ms=30``) into a field and value.

    Raises :class:`SimConfigError` for an unknown name, a field that has its own option, or
    a value of the wrong type; the config's own checks then judge the value's range.
    """
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    settable = settable_fields()
    if not sep or not name:
        raise SimConfigError(f"--set takes NAME=VALUE, got {text!r}")
    if name not in settable:
        own = {f.name for f in fields(SimConfig)}
        hint = "it has an option of its own" if name in own else "no such setting"
        raise SimConfigError(f"--set {name}: {hint}; settable: {', '.join(sorted(settable))}")
    default = settable[name]
    if isinstance(default, tuple):
        return name, parse_span(raw, f"--set {name}")
    try:
        if isinstance(default, bool):
            raise ValueError
        if isinstance(default, int):
            return name, int(raw)
        if isinstance(default, float):
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return name, value
    except ValueError:
        kind = type(default).__name__
        raise SimConfigError(f"--set {name} takes a {kind}, got {raw!r}") from None
    return name, raw
