"""Sweeps: many seeds of one scenario across worker processes, with progress and a summary."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.base import CoreFactory
from .config import SimConfig, SimConfigError
from .raft_sim import default_core_factory
from .report import SimSummary, run_simulation
from .workload import WorkloadFactory

__all__ = ["SweepResult", "parse_seed_range", "render_sweep", "run_sweep"]


def parse_seed_range(text: str) -> range:
    """Parse ``--seeds``: ``"A:B"`` (seeds A to B-1, ``0 <= A < B``) or a count ``"N"``,
    which means ``"0:N"``. ``simulate`` and ``bench sim`` both read it so.

    Raises :class:`SimConfigError` with a one-line message on anything else.
    """
    usage = "--seeds takes a range A:B (seeds A to B-1) or a count N (= 0:N)"
    try:
        if ":" in text:
            start_s, end_s = text.split(":", 1)
            start, end = int(start_s), int(end_s)
        else:
            start, end = 0, int(text)
    except ValueError:
        raise SimConfigError(f"{usage}, got {text!r}") from None
    if start < 0 or end <= start:
        raise SimConfigError(f"{usage} with 0 <= A < B and N >= 1, got {text!r}")
    return range(start, end)


@dataclass(frozen=True)
class SweepResult:
    """All summaries of a sweep, in seed order."""

    summaries: list[SimSummary]

    @property
    def failures(self) -> list[SimSummary]:
        """Seeds that broke an invariant or produced a non-linearizable history."""
        return [s for s in self.summaries if s.status == "fail"]

    @property
    def unknown(self) -> list[SimSummary]:
        """Seeds whose linearizability check timed out."""
        return [s for s in self.summaries if s.status == "unknown"]


# what every seed of the sweep runs with, set in each worker process by _init_worker
_worker_factory: CoreFactory = default_core_factory
_worker_workload: WorkloadFactory | None = None


def _init_worker(factory: CoreFactory, workload: WorkloadFactory | None) -> None:
    global _worker_factory, _worker_workload
    _worker_factory = factory
    _worker_workload = workload


def _run_seed(config: SimConfig) -> SimSummary:
    return run_simulation(config, _worker_factory, workload=_worker_workload)


def run_sweep(
    base: SimConfig,
    seeds: Iterable[int],
    processes: int | None = None,
    core_factory: CoreFactory = default_core_factory,
    console: Console | None = None,
    progress: bool = True,
    workload: WorkloadFactory | None = None,
) -> SweepResult:
    """Run ``base`` for every seed, spread over ``processes`` workers (default: all cores).

    Each seed is independent and deterministic, so the order workers finish in does not
    matter; results come back sorted by seed. ``core_factory`` and ``workload`` (see
    :func:`run_simulation`) reach every worker through its initializer; both are pickled
    when the platform starts workers by spawning, so pass module-level functions.
    """
    configs = [base.with_seed(s) for s in seeds]
    workers = max(1, min(processes or os.cpu_count() or 1, len(configs)))
    summaries: list[SimSummary] = []
    console = console or Console(stderr=True)
    columns = (
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("sweep", total=len(configs), failed=0)
        failed = 0
        if workers == 1:
            _init_worker(core_factory, workload)
            results: Iterable[SimSummary] = map(_run_seed, configs)
            for summary in results:
                summaries.append(summary)
                failed += summary.status == "fail"
                bar.update(task, advance=1, failed=failed)
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(
                workers, initializer=_init_worker, initargs=(core_factory, workload)
            ) as pool:
                for summary in pool.imap_unordered(_run_seed, configs):
                    summaries.append(summary)
                    failed += summary.status == "fail"
                    bar.update(task, advance=1, failed=failed)
    summaries.sort(key=lambda s: s.seed)
    return SweepResult(summaries)


def render_sweep(result: SweepResult, console: Console) -> None:
    """Print the sweep's summary table and the replay command of every failing seed."""
    s = result.summaries
    table = Table(title="sweep summary")
    table.add_column("seeds", justify="right")
    table.add_column("pass", justify="right", style="green")
    table.add_column("fail", justify="right", style="red")
    table.add_column("unknown", justify="right", style="yellow")
    table.add_column("ops ok", justify="right")
    table.add_column("ops info", justify="right")
    table.add_column("leader changes", justify="right")
    table.add_column("msgs delivered", justify="right")
    table.add_column("wall s", justify="right")
    table.add_row(
        str(len(s)),
        str(sum(x.status == "pass" for x in s)),
        str(len(result.failures)),
        str(len(result.unknown)),
        str(sum(x.operations["ok"] for x in s)),
        str(sum(x.operations["info"] for x in s)),
        str(sum(x.leader_changes for x in s)),
        str(sum(x.messages_delivered for x in s)),
        f"{sum(x.wall_seconds + x.check_seconds for x in s):.1f}",
    )
    console.print(table)
    if result.failures or result.unknown:
        bad = Table(title="seeds that did not pass")
        bad.add_column("seed", justify="right")
        bad.add_column("status")
        bad.add_column("first violation")
        bad.add_column("replay")
        for x in result.failures + result.unknown:
            bad.add_row(str(x.seed), x.status, x.violations[0] if x.violations else "-", x.replay)
        console.print(bad)
