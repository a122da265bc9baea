"""``ruflo-consensus bench sim``: how fast the simulator runs a cluster, in one process."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
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
from .raft_sim import RaftSimulation
from .workload import WorkloadFactory

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


def _seed_range(seeds: int | range) -> range:
    """``seeds`` as a range: a count N is seeds ``0 .. N-1``."""
    return range(seeds) if isinstance(seeds, int) else seeds


def _seed_fields(seeds: int | range) -> dict[str, Any]:
    """How a result names its seeds: ``seeds`` (how many) and ``seed_range`` ``[A, B)``."""
    r = _seed_range(seeds)
    return {"seeds": len(r), "seed_range": [r.start, r.stop]}


def _per_seed(
    label: str,
    seeds: int | range,
    run_seed: Callable[[int], dict[str, Any]],
    console: Console | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """Run the seeds (a count N: ``0 .. N-1``) one after another under a progress bar;
    their rows."""
    rows: list[dict[str, Any]] = []
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console or Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("bench", total=len(_seed_range(seeds)))
        for seed in _seed_range(seeds):
            rows.append(run_seed(seed))
            bar.update(task, advance=1)
    return rows


def _machine() -> dict[str, str]:
    """Where a benchmark ran (goes with every result)."""
    return {"python": platform.python_version(), "machine": platform.machine()}


def _raw_pycrdt_seconds(captured: list[tuple[int, bytes]], nodes: int) -> float:
    """Apply the same update bytes, in the same order, to bare pycrdt documents."""
    docs: list[Doc[Any]] = [Doc() for _ in range(nodes)]
    started = time.perf_counter()
    for index, update in captured:
        docs[index].apply_update(update)
    return time.perf_counter() - started


def run_bench_crdt(
    base: SimConfig, seeds: int | range, console: Console | None = None, progress: bool = True
) -> dict[str, Any]:
    """CRDT merge throughput, and what the core costs over raw pycrdt on the same updates.

    For every update-carrying message a replica receives (gossip and anti-entropy
    replies) the time inside the simulator's handling of it is summed — the core's
    validation, causal buffering, merge, re-gossip and persistence; then the very same
    update bytes are applied in the same order to bare ``pycrdt.Doc`` objects.
    """

    def run_seed(seed: int) -> dict[str, Any]:
        sim = _TimedCrdtSimulation(base.with_seed(seed))
        result = sim.run()
        raw = _raw_pycrdt_seconds(sim.captured, len(sim.nodes))
        merged = sum(v for k, v in result.properties["updates merged"].items() if k != "local")
        return {
            "seed": seed,
            "update_messages": sim.update_messages,
            "updates_merged_new": merged,
            "core_seconds": sim.update_seconds,
            "raw_pycrdt_seconds": raw,
            "wall_seconds": result.wall_seconds,
        }

    rows = _per_seed("bench sim crdt", seeds, run_seed, console, progress)
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
        **_seed_fields(seeds),
        "update_messages": msgs,
        "updates_merged_new": sum(r["updates_merged_new"] for r in rows),
        "updates_per_second": msgs / core if core else 0.0,
        "raw_pycrdt_updates_per_second": msgs / raw if raw else 0.0,
        "overhead_ratio": core / raw if raw else 0.0,
        **_machine(),
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


def _ed25519_costs(rounds: int = 2000) -> tuple[float, float]:
    """Microseconds per Ed25519 sign and per (uncached) verify of a prepare-sized body."""
    import nacl.signing

    from ..core.pbft import Signer
    from ..core.pbft.messages import PREPARE, seal

    signer = Signer.derived(b"bench", "n1")
    bodies = [seal(signer, PREPARE, 0, i + 1, bytes(32)).body for i in range(rounds)]
    started = time.perf_counter()
    sigs = [signer.sign(b) for b in bodies]
    sign_us = (time.perf_counter() - started) / rounds * 1e6
    vk = nacl.signing.VerifyKey(signer.public_key)
    started = time.perf_counter()
    for b, sig in zip(bodies, sigs, strict=True):
        vk.verify(b, sig)
    verify_us = (time.perf_counter() - started) / rounds * 1e6
    return sign_us, verify_us


def _raft_committed(sim: RaftSimulation) -> int:
    return sum(1 for e in sim.invariants.applied if e.proposal is not None)


def run_bench_pbft(
    base: SimConfig, seeds: int | range, console: Console | None = None, progress: bool = True
) -> dict[str, Any]:
    """PBFT against Raft on the same scenario and seeds: committed requests per wall second.

    Each seed runs twice, in this process, one after the other: the PBFT cluster (with its
    Byzantine replicas) and a Raft cluster of the same size under the same faults, clients
    and duration, with Raft's reads through the log (``reads="log"``) so that in both every
    client operation is a committed request. A committed request is one in the agreed log
    (PBFT: executed by an honest replica; Raft: applied). The Ed25519 costs are measured on
    the side, and the share of PBFT's wall time they explain is estimated from the counts.
    """
    from .pbft_sim import PbftSimulation

    raft_base = replace(base, backend="raft", reads="log", byzantine=None)

    def run_seed(seed: int) -> dict[str, Any]:
        pbft = PbftSimulation(base.with_seed(seed))
        pr = pbft.run()
        raft = RaftSimulation(raft_base.with_seed(seed))
        rr = raft.run()
        sig = pr.properties["signatures"]
        return {
            "seed": seed,
            "pbft_committed": sum(len(b) for b in pbft.executed_batches.values()),
            "pbft_wall_seconds": pr.wall_seconds,
            "pbft_messages": pr.messages_delivered,
            "pbft_ops_ok": sum(1 for op in pr.history if op.type == "ok"),
            "raft_committed": _raft_committed(raft),
            "raft_wall_seconds": rr.wall_seconds,
            "raft_messages": rr.messages_delivered,
            "raft_ops_ok": sum(1 for op in rr.history if op.type == "ok"),
            "signs": sig["made"],
            "verifications": sig["verified"],
            "verify_cache_hits": sig["cache hits"],
        }

    rows = _per_seed("bench sim pbft vs raft", seeds, run_seed, console, progress)
    sign_us, verify_us = _ed25519_costs()

    def total(key: str) -> Any:
        return sum(r[key] for r in rows)

    pbft_wall, raft_wall = total("pbft_wall_seconds"), total("raft_wall_seconds")
    crypto_s = (total("signs") * sign_us + total("verifications") * verify_us) / 1e6
    lookups = total("verifications") + total("verify_cache_hits")
    return {
        "benchmark": "sim",
        "backend": "pbft",
        "nodes": base.nodes,
        "byzantine": base.byzantine,
        "faults": list(base.faults),
        "duration_s": base.duration_s,
        "clients": base.clients,
        **_seed_fields(seeds),
        "pbft_committed_per_wall_second": total("pbft_committed") / pbft_wall if pbft_wall else 0,
        "raft_committed_per_wall_second": total("raft_committed") / raft_wall if raft_wall else 0,
        "pbft_committed": total("pbft_committed"),
        "raft_committed": total("raft_committed"),
        "pbft_wall_seconds": pbft_wall,
        "raft_wall_seconds": raft_wall,
        "sign_us": sign_us,
        "verify_us": verify_us,
        "signs": total("signs"),
        "verifications": total("verifications"),
        "verify_cache_hit_rate": total("verify_cache_hits") / lookups if lookups else 0.0,
        "crypto_share_of_pbft_wall": crypto_s / pbft_wall if pbft_wall else 0.0,
        **_machine(),
        "rows": rows,
    }


def render_bench_pbft(result: dict[str, Any], console: Console) -> None:
    """Print the PBFT-vs-Raft benchmark as a table."""
    table = Table(
        title=f"bench sim: {result['nodes']}-node PBFT vs Raft, faults "
        f"{','.join(result['faults']) or 'none'}, {result['duration_s']:g} s per seed"
    )
    for col in (
        "seed",
        "PBFT committed",
        "PBFT wall s",
        "PBFT req / wall s",
        "Raft committed",
        "Raft wall s",
        "Raft req / wall s",
    ):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            str(r["seed"]),
            str(r["pbft_committed"]),
            f"{r['pbft_wall_seconds']:.2f}",
            f"{r['pbft_committed'] / r['pbft_wall_seconds']:,.0f}",
            str(r["raft_committed"]),
            f"{r['raft_wall_seconds']:.2f}",
            f"{r['raft_committed'] / r['raft_wall_seconds']:,.0f}",
        )
    table.add_row(
        "all",
        str(result["pbft_committed"]),
        f"{result['pbft_wall_seconds']:.2f}",
        f"[bold]{result['pbft_committed_per_wall_second']:,.0f}[/]",
        str(result["raft_committed"]),
        f"{result['raft_wall_seconds']:.2f}",
        f"[bold]{result['raft_committed_per_wall_second']:,.0f}[/]",
    )
    console.print(table)
    console.print(
        f"Ed25519 here: sign {result['sign_us']:.0f} µs, verify {result['verify_us']:.0f} µs; "
        f"PBFT made {result['signs']:,} signatures and verified {result['verifications']:,} "
        f"(cache hit rate {result['verify_cache_hit_rate']:.0%}), about "
        f"{result['crypto_share_of_pbft_wall']:.0%} of its wall time"
    )


def run_bench_sim(
    base: SimConfig,
    seeds: int | range,
    console: Console | None = None,
    progress: bool = True,
    workload: WorkloadFactory | None = None,
) -> dict[str, Any]:
    """Run ``seeds`` (a range, or a count N: ``0 .. N-1``) one after another on one core;
    measure simulation speed only.

    The linearizability check is not part of the timing (``bench check`` measures it).
    ``workload`` builds the Raft runs' workload (see :func:`.report.run_simulation`).
    Returns a JSON-ready dict: per-seed rows and the totals.
    """
    if base.backend == "crdt":
        return run_bench_crdt(base, seeds, console, progress)
    if base.backend == "pbft":
        return run_bench_pbft(base, seeds, console, progress)

    def run_seed(seed: int) -> dict[str, Any]:
        result = RaftSimulation(base.with_seed(seed), workload=workload).run()
        return {
            "seed": seed,
            "messages": result.messages_delivered,
            "events": result.events,
            "sim_seconds": result.sim_seconds,
            "wall_seconds": result.wall_seconds,
            "messages_per_second": result.messages_delivered / result.wall_seconds,
            "ops_completed": sum(1 for op in result.history if op.type != "invoke"),
        }

    rows = _per_seed("bench sim", seeds, run_seed, console, progress)
    total_msgs = sum(r["messages"] for r in rows)
    total_wall = sum(r["wall_seconds"] for r in rows)
    return {
        "benchmark": "sim",
        "backend": "raft",
        "nodes": base.nodes,
        "faults": list(base.faults),
        "duration_s": base.duration_s,
        **_seed_fields(seeds),
        "messages": total_msgs,
        "wall_seconds": total_wall,
        "messages_per_second": total_msgs / total_wall if total_wall else 0.0,
        "median_messages_per_second": statistics.median(r["messages_per_second"] for r in rows),
        "sim_seconds_per_wall_second": sum(r["sim_seconds"] for r in rows) / total_wall,
        **_machine(),
        "rows": rows,
    }


def render_bench_sim(result: dict[str, Any], console: Console) -> None:
    """Print the benchmark as a table."""
    if result["backend"] == "crdt":
        render_bench_crdt(result, console)
        return
    if result["backend"] == "pbft":
        render_bench_pbft(result, console)
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
