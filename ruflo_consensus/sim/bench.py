"""``ruflo-consensus bench sim``: how fast the simulator runs a cluster, in one process."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

from pycrdt import Doc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.base import Message
from ..core.crdt import CrdtUpdate, SyncReply
from .config import SimConfig
from .crdt_sim import CrdtSimulation
from .engine import EngineNode
from .simulator import Simulation

__all__ = ["render_bench_sim", "run_bench_sim"]


class _TimedCrdtSimulation(CrdtSimulation):
    """Times the core's handling of every update-carrying message and keeps the bytes."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.update_seconds = 0.0
        self.update_messages = 0
        self.captured: list[tuple[int, bytes]] = []

    def on_message(self, node: EngineNode, message: Message) -> None:
        if not isinstance(message, CrdtUpdate | SyncReply) or not message.update:
            super().on_message(node, message)
            return
        self.captured.append((node.index, message.update))
        started = time.perf_counter()
        super().on_message(node, message)
        self.update_seconds += time.perf_counter() - started
        self.update_messages += 1


def _raw_pycrdt_seconds(captured: list[tuple[int, bytes]], nodes: int) -> float:
    """Apply the same update bytes, in the same order, to bare pycrdt documents."""
    docs: list[Doc[Any]] = [Doc() for _ in range(nodes)]
    started = time.perf_counter()
    for index, update in captured:
        docs[index].apply_update(update)
    return time.perf_counter() - started


def run_bench_crdt(
    base: SimConfig, seeds: int, console: Console | None = None, progress: bool = True
) -> dict[str, Any]:
    """CRDT merge throughput, and what the core costs over raw pycrdt on the same updates.

    For every update-carrying message a replica receives (gossip and anti-entropy
    replies) the time inside the simulator's handling of it is summed — the core's
    validation, causal buffering, merge, re-gossip and persistence; then the very same
    update bytes are applied in the same order to bare ``pycrdt.Doc`` objects.
    """
    rows: list[dict[str, Any]] = []
    columns = (
        TextColumn("[bold]bench sim crdt"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("bench", total=seeds)
        for seed in range(seeds):
            sim = _TimedCrdtSimulation(base.with_seed(seed))
            result = sim.run()
            raw = _raw_pycrdt_seconds(sim.captured, len(sim.nodes))
            merged = sum(v for k, v in result.properties["updates merged"].items() if k != "local")
            rows.append(
                {
                    "seed": seed,
                    "update_messages": sim.update_messages,
                    "updates_merged_new": merged,
                    "core_seconds": sim.update_seconds,
                    "raw_pycrdt_seconds": raw,
                    "wall_seconds": result.wall_seconds,
                }
            )
            bar.update(task, advance=1)
    msgs = sum(r["update_messages"] for r in rows)
    core = sum(r["core_seconds"] for r in rows)
    raw = sum(r["raw_pycrdt_seconds"] for r in rows)
    return {
        "benchmark": "sim",
        "backend": "crdt",
        "topology": base.topology,
        "nodes": base.nodes,
        "faults": list(base.faults),
        "duration_s": base.duration_s,
        "seeds": seeds,
        "update_messages": msgs,
        "updates_merged_new": sum(r["updates_merged_new"] for r in rows),
        "updates_per_second": msgs / core if core else 0.0,
        "raw_pycrdt_updates_per_second": msgs / raw if raw else 0.0,
        "overhead_ratio": core / raw if raw else 0.0,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }


def render_bench_crdt(result: dict[str, Any], console: Console) -> None:
    """Print the CRDT benchmark as a table."""
    table = Table(title=f"bench sim: {result['nodes']}-node CRDT on {result['topology']}")
    for col in ("seed", "update msgs", "new merges", "core s", "raw pycrdt s", "wall s"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            str(r["seed"]),
            str(r["update_messages"]),
            str(r["updates_merged_new"]),
            f"{r['core_seconds']:.3f}",
            f"{r['raw_pycrdt_seconds']:.3f}",
            f"{r['wall_seconds']:.2f}",
        )
    console.print(table)
    console.print(
        f"update messages handled per second: [bold]{result['updates_per_second']:,.0f}[/] "
        f"(raw pycrdt on the same updates: {result['raw_pycrdt_updates_per_second']:,.0f}; "
        f"our layer costs {result['overhead_ratio']:.1f}× raw apply)"
    )


def run_bench_sim(
    base: SimConfig, seeds: int, console: Console | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run ``seeds`` seeds one after another on one core; measure simulation speed only.

    The linearizability check is not part of the timing (``bench check`` measures it).
    Returns a JSON-ready dict: per-seed rows and the totals.
    """
    if base.backend == "crdt":
        return run_bench_crdt(base, seeds, console, progress)
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
    if result["backend"] == "crdt":
        render_bench_crdt(result, console)
        return
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
