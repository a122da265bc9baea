"""Run a simulation, check its history, and present the outcome (rich or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from ..check import check_history, dump_history_jsonl
from ..core.base import CoreFactory
from .config import FAULT_DESCRIPTIONS, SimConfig
from .raft_sim import RaftSimulation, SimResult, default_core_factory
from .workload import WorkloadFactory

__all__ = [
    "OPERATION_TYPES",
    "SimSummary",
    "operation_types",
    "render_summary",
    "run_simulation",
    "summarize",
]

OPERATION_TYPES: dict[str, str] = {
    "ok": "completed: the command was applied, or the read answered",
    "fail": "definitely not applied: the command was refused (a cas whose old value did "
    "not match, a typed rejection) and changed nothing",
    "info": "unknown outcome: no answer in time (or before the run ended), the command may "
    "or may not have been applied",
}
"""What each client operation type means (``operation_types`` in ``simulate --json``)."""


def operation_types(workload: str) -> dict[str, str]:
    """:data:`OPERATION_TYPES`, worded for ``workload``: in the federation workload a
    ``fail`` is a command the machines refused by design (a typed rejection)."""
    if workload != "federation":
        return dict(OPERATION_TYPES)
    return {
        **OPERATION_TYPES,
        "fail": "refused by design: the replicated machines rejected the command with a "
        "typed code (see 'commands rejected by code'), as the workload means some to be; "
        "not an error of the run",
    }


@dataclass(frozen=True)
class SimSummary:
    """The machine-readable outcome of one seed (what ``--json`` prints, what sweeps collect).

    ``status`` is ``"pass"`` (no invariant broken, history linearizable), ``"fail"``
    (an invariant broke or the history is not linearizable) or ``"unknown"`` (the
    linearizability check timed out). ``operation_types`` says what the ``ok``, ``fail``
    and ``info`` counts of ``operations`` mean for this workload; ``warnings`` what the
    run does not promise (more Byzantine replicas than f, allowed on purpose).
    """

    seed: int
    status: str
    trace_hash: str
    violations: list[str]
    linearizable: bool | None
    linearizability_checked: bool
    properties: dict[str, Any]
    operations: dict[str, int]
    leader_changes: int
    max_term: int
    commit_index: int
    faults: dict[str, int]
    invariants_checked: dict[str, int]
    messages_delivered: int
    messages_dropped: int
    messages_duplicated: int
    messages_relayed: int
    rejected_messages: dict[str, int]
    sim_seconds: float
    wall_seconds: float
    check_seconds: float
    replay: str
    failure_window: str | None
    recent_events: list[str]
    operation_types: dict[str, str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``recent_events`` only when the run failed)."""
        data = asdict(self)
        if self.status == "pass":
            data.pop("recent_events")
        return data


def summarize(result: SimResult, check_timeout_s: float | None = None) -> SimSummary:
    """Check the run's history for linearizability and fold everything into a summary."""
    counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}
    for op in result.history:
        counts[op.type] = counts.get(op.type, 0) + 1
    violations: list[str] = []
    if result.violation is not None:
        violations.append(str(result.violation))
    violations.extend(f"cross-node property: {v}" for v in result.property_violations)
    timeout = result.config.check_timeout_s if check_timeout_s is None else check_timeout_s
    checked = result.config.workload == "kv" and result.config.backend in ("raft", "pbft")
    check = check_history(result.history if checked else [], "kv", timeout=timeout)
    window = None
    if check.linearizable is False:
        violations.append("linearizability: the client history is not linearizable")
        if check.failure is not None:
            window = check.failure.render()
    if violations:
        status = "fail"
    elif checked and check.linearizable is None:
        status = "unknown"
    else:
        status = "pass"
    return SimSummary(
        seed=result.config.seed,
        status=status,
        trace_hash=result.trace_hash,
        violations=violations,
        linearizable=check.linearizable if checked else None,
        linearizability_checked=checked,
        properties=result.properties,
        operations={"ok": counts["ok"], "fail": counts["fail"], "info": counts["info"]},
        leader_changes=result.leader_changes,
        max_term=result.terms,
        commit_index=result.commit_index,
        faults=result.faults,
        invariants_checked=result.invariant_checks,
        messages_delivered=result.messages_delivered,
        messages_dropped=result.messages_dropped,
        messages_duplicated=result.messages_duplicated,
        messages_relayed=result.messages_relayed,
        rejected_messages=result.rejected,
        sim_seconds=result.sim_seconds,
        wall_seconds=result.wall_seconds,
        check_seconds=check.seconds,
        replay=result.config.replay_command(),
        failure_window=window,
        recent_events=result.recent_events,
        operation_types=operation_types(result.config.workload),
        warnings=[w for w in (result.config.over_f_warning(),) if w is not None],
    )


def run_simulation(
    config: SimConfig,
    core_factory: CoreFactory = default_core_factory,
    history_path: str | None = None,
    workload: WorkloadFactory | None = None,
) -> SimSummary:
    """Run one seed end to end: simulate, check invariants and linearizability, summarise.

    ``config.backend`` picks the simulation (``raft``, ``crdt`` or ``pbft``); ``core_factory``
    replaces the Raft core (tests use it to run deliberately broken ones); ``workload``
    builds the Raft run's workload (needed when ``config.workload`` is not ``kv``: the
    simulator has only the KV workload built in). With ``history_path`` the clients'
    history is written there as JSON Lines, ready for ``ruflo-consensus check`` or any
    Jepsen-style tool.
    """
    if config.backend == "crdt":
        from .crdt_sim import CrdtSimulation

        result = CrdtSimulation(config).run()
    elif config.backend == "pbft":
        from .pbft_sim import PbftSimulation

        result = PbftSimulation(config).run()
    else:
        result = RaftSimulation(config, core_factory, workload=workload).run()
    if history_path is not None:
        dump_history_jsonl(result.history, history_path)
    return summarize(result)


def render_summary(summary: SimSummary, console: Console) -> None:
    """Print the human report of one run."""
    colour = {"pass": "green", "fail": "red", "unknown": "yellow"}[summary.status]
    console.print(
        f"[bold]ruflo-consensus simulation[/] seed {summary.seed}: "
        f"[bold {colour}]{summary.status.upper()}[/]"
    )
    for warning in summary.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    ops = summary.operations
    table.add_row("operations", f"{ops['ok']} ok, {ops['fail']} fail, {ops['info']} info")
    for kind in ("fail", "info"):
        table.add_row(f"  {kind}", summary.operation_types[kind])
    if summary.max_term:
        table.add_row(
            "leader changes", f"{summary.leader_changes} (highest term {summary.max_term})"
        )
        table.add_row("commit index", str(summary.commit_index))
    table.add_row(
        "messages",
        f"{summary.messages_delivered} delivered, {summary.messages_dropped} dropped, "
        f"{summary.messages_duplicated} duplicated, {summary.messages_relayed} relay hops",
    )
    if summary.rejected_messages:
        table.add_row(
            "rejected messages",
            ", ".join(f"{k} {v}" for k, v in summary.rejected_messages.items()),
        )
    faults = ", ".join(f"{k} {v}" for k, v in summary.faults.items()) or "none"
    table.add_row("faults injected", faults)
    checks = ", ".join(f"{k} {v}" for k, v in summary.invariants_checked.items())
    table.add_row("invariants checked", checks)
    verdict = {
        True: "[green]linearizable[/]",
        False: "[red]NOT linearizable[/]",
        None: "[yellow]unknown (checker timed out)[/]",
    }[summary.linearizable]
    if summary.linearizability_checked:
        table.add_row("linearizability", f"{verdict} ({summary.check_seconds:.2f} s)")
    else:
        table.add_row("linearizability", "not checked for this workload (see properties)")
    for name, value in summary.properties.items():
        if isinstance(value, bool):
            shown = "[green]holds[/]" if value else "[red]VIOLATED[/]"
        elif isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        else:
            shown = str(value)
        table.add_row(name, shown)
    table.add_row("time", f"{summary.sim_seconds:.1f} s simulated in {summary.wall_seconds:.2f} s")
    table.add_row("trace hash", summary.trace_hash)
    table.add_row("replay", summary.replay)
    console.print(table)
    for v in summary.violations:
        console.print(f"[bold red]violation:[/] {v}")
    if summary.failure_window:
        console.print(summary.failure_window)
    if summary.status == "fail" and summary.recent_events:
        console.print("[bold]last events before the end of the run:[/]")
        for line in summary.recent_events[-20:]:
            console.print(f"  {line}", markup=False, highlight=False)


def describe_faults() -> str:
    """One line per fault kind, for ``--help``."""
    return "\n".join(f"{k}: {v}" for k, v in FAULT_DESCRIPTIONS.items())
