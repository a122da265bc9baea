"""``ruflo-consensus bench sim``: how fast the simulator runs a cluster, in one process."""

from __future__ import annotations

import platform
import statistics
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import SimConfig
from .simulator import Simulation

__all__ = ["render_bench_sim", "run_bench_sim"]


def run_bench_sim(
    base: SimConfig, seeds: int, console: Console | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run ``seeds`` seeds one after another on one core; measure simulation speed only.

    The linearizability check is not part of the timing (``bench check`` measures it).
    Returns a JSON-ready dict: per-seed rows and the totals.
    """
    rows: list[dict[str, Any]] = []
    columns = (
        TextColumn("[bold]bench sim"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("bench", total=seeds)
        for seed in range(seeds):
            result = Simulation(base.with_seed(seed)).run()
            rows.append(
                {
                    "seed": seed,
                    "messages": result.messages_delivered,
                    "events": result.events,
                    "sim_seconds": result.sim_seconds,
                    "wall_seconds": result.wall_seconds,
                    "messages_per_second": result.messages_delivered / result.wall_seconds,
                    "ops_completed": sum(1 for op in result.history if op.type != "invoke"),
                }
            )
            bar.update(task, advance=1)
    total_msgs = sum(r["messages"] for r in rows)
    total_wall = sum(r["wall_seconds"] for r in rows)
    return {
        "benchmark": "sim",
        "backend": "raft",
        "nodes": base.nodes,
        "faults": list(base.faults),
        "duration_s": base.duration_s,
        "seeds": seeds,
        "messages": total_msgs,
        "wall_seconds": total_wall,
        "messages_per_second": total_msgs / total_wall if total_wall else 0.0,
        "median_messages_per_second": statistics.median(r["messages_per_second"] for r in rows),
        "sim_seconds_per_wall_second": sum(r["sim_seconds"] for r in rows) / total_wall,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }


def render_bench_sim(result: dict[str, Any], console: Console) -> None:
    """Print the benchmark as a table."""
    table = Table(
        title=f"bench sim: {result['nodes']}-node Raft, faults "
        f"{','.join(result['faults']) or 'none'}"
    )
    for col in ("seed", "messages", "events", "sim s", "wall s", "msgs / wall s", "ops done"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            str(r["seed"]),
            str(r["messages"]),
            str(r["events"]),
            f"{r['sim_seconds']:.1f}",
            f"{r['wall_seconds']:.2f}",
            f"{r['messages_per_second']:,.0f}",
            str(r["ops_completed"]),
        )
    table.add_row(
        "all",
        str(result["messages"]),
        "",
        "",
        f"{result['wall_seconds']:.2f}",
        f"[bold]{result['messages_per_second']:,.0f}[/]",
        "",
    )
    console.print(table)
    console.print(f"simulated seconds per wall second: {result['sim_seconds_per_wall_second']:.1f}")
