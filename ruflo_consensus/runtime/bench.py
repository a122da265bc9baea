"""``ruflo-consensus bench cluster``: our Raft cluster against a pysyncobj cluster.

Both sides replicate the same state machine, a counter (``incr`` returns the new value),
on 127.0.0.1, every node its own process. The load runs *inside* the leader's process
(each worker waits for a leader; the one that leads runs it) through each library's
embedding API (``Node.submit`` here, a ``@replicated`` method there), so neither side pays
for a client hop or a follower's forwarding.

* **throughput**: ``--pipeline`` writes in flight for ``--seconds``; committed writes/s;
* **latency**: ``--latency-ops`` writes one at a time; p50/p99/mean in milliseconds.

Our nodes fsync their WAL before they acknowledge (``--no-fsync`` turns it off);
pysyncobj runs with its defaults, which keep the log in memory (no journal file) and
send AppendEntries every 100 ms (``--pysyncobj-append-period`` changes that period).

Worker processes are started as ``python -m ruflo_consensus.runtime.bench ruflo-node …``
and ``… pysyncobj-node …``; the coordinator kills them (SIGKILL) when a side is done.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CounterMachine", "run_bench_cluster", "run_bench_cluster_command"]


class CounterMachine:
    """A replicated counter: ``{"op": "incr"}`` → the new value."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, command: Any) -> Any:
        """Increment (``incr``) or read (``get``) the counter."""
        from ..statemachine import CommandError

        op = command.get("op") if isinstance(command, dict) else None
        if op == "incr":
            self.value += 1
            return self.value
        if op == "get":
            return self.value
        raise CommandError("UNKNOWN_OP", f"counter has no op {op!r}")

    def snapshot(self) -> bytes:
        """The value as 8 bytes."""
        return self.value.to_bytes(8, "big", signed=True)

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by :meth:`snapshot`."""
        self.value = int.from_bytes(data, "big", signed=True)


def _summary(latencies: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    if not ms:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "mean_ms": statistics.fmean(ms),
    }


# ----------------------------------------------------------------------------- our side


async def _ruflo_load(
    node: Any, seconds: float, pipeline: int, latency_ops: int, profile: str | None = None
) -> dict[str, Any]:
    import cProfile

    import trio

    with trio.fail_after(30):
        while node.leader is None:
            await trio.sleep(0.01)
    for _ in range(50):  # warm-up: connections, leader's first entry, code paths
        await node.submit({"op": "incr"})
    done = 0
    deadline = trio.current_time() + seconds

    async def writer() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            await node.submit({"op": "incr"})
            done += 1

    profiler = cProfile.Profile() if profile else None
    start = trio.current_time()
    if profiler is not None:
        profiler.enable()
    async with trio.open_nursery() as nursery:
        for _ in range(pipeline):
            nursery.start_soon(writer)
    elapsed = trio.current_time() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    latencies = []
    for _ in range(latency_ops):
        t0 = time.perf_counter()
        await node.submit({"op": "incr"})
        latencies.append(time.perf_counter() - t0)
    return {
        "writes": done,
        "seconds": elapsed,
        "writes_per_s": done / elapsed,
        "latency_ops": latency_ops,
        "leader_is_load_node": node.leader == node.node_id,
        **_summary(latencies),
    }


def _claim(out: str) -> bool:
    """Become the one worker that runs the load (the first leader to get here wins)."""
    try:
        os.close(os.open(out + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def _ruflo_worker(args: argparse.Namespace) -> int:
    import trio

    from .embed import build_node

    async def main() -> None:
        node = build_node(args.spec, args.id, CounterMachine())
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            # the load runs on the leader: whoever leads (and claims it first) runs it, so a
            # leader change before the start on a busy machine does not stall the run
            while args.out and not Path(args.out + ".claim").exists():
                if node.leader == node.node_id and _claim(args.out):
                    result = await _ruflo_load(
                        node, args.seconds, args.pipeline, args.latency_ops, args.profile
                    )
                    Path(args.out).write_text(json.dumps(result))
                    break
                await trio.sleep(0.02)
            await trio.sleep_forever()

    trio.run(main)
    return 0


# ----------------------------------------------------------------------------- pysyncobj


def pysyncobj_conf(me: str, append_period: float | None = None) -> Any:
    """The ``SyncObjConf`` of a benchmark's pysyncobj node at ``me`` (``host:port``).

    It binds ``me`` itself: without ``bindAddress`` pysyncobj listens on 0.0.0.0 (every
    interface) whatever host its own address names.
    """
    from pysyncobj import SyncObjConf

    conf = SyncObjConf(dynamicMembershipChange=False, bindAddress=me)
    if append_period is not None:
        conf.appendEntriesPeriod = append_period
    return conf


def _pysyncobj_worker(args: argparse.Namespace) -> int:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjException, replicated

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, partners: list[str]) -> None:
            super().__init__(me, partners, pysyncobj_conf(me, args.append_period))
            self.value = 0

        @replicated  # type: ignore[untyped-decorator]
        def incr(self) -> int:
            self.value += 1
            return self.value

    counter = Counter(args.me, args.partners)
    deadline = time.monotonic() + 30
    while not counter.isReady() or counter._getLeader() is None:
        if time.monotonic() > deadline:
            raise SystemExit("pysyncobj cluster did not get ready")
        time.sleep(0.01)
    while not (args.out and counter._isLeader() and _claim(args.out)):  # as for ours
        if not args.out or Path(args.out + ".claim").exists():
            while True:
                time.sleep(3600)
        time.sleep(0.02)
    retried = [0]

    def incr_sync() -> None:
        """One write, retried when pysyncobj drops it (a leader change on a busy machine)."""
        for _ in range(20):
            try:
                counter.incr(sync=True, timeout=10)
                return
            except SyncObjException:
                retried[0] += 1
                time.sleep(0.05)
        raise SystemExit("pysyncobj dropped the same write 20 times")

    for _ in range(50):
        incr_sync()
    inflight = threading.Semaphore(args.pipeline)
    lock = threading.Lock()
    done = [0, 0]

    def callback(result: Any, error: Any) -> None:
        with lock:
            done[0 if error == FAIL_REASON.SUCCESS else 1] += 1
        inflight.release()

    start = time.monotonic()
    end = start + args.seconds
    while time.monotonic() < end:
        if not inflight.acquire(timeout=30):
            break  # callbacks stopped coming: count what did finish
        counter.incr(callback=callback)
    for _ in range(args.pipeline):  # wait for the writes still in flight (bounded)
        if not inflight.acquire(timeout=30):
            break
    elapsed = time.monotonic() - start
    latencies = []
    for _ in range(args.latency_ops):
        t0 = time.perf_counter()
        incr_sync()
        latencies.append(time.perf_counter() - t0)
    leader = counter._getLeader()
    result = {
        "writes": done[0],
        "failed": done[1],
        "retried": retried[0],
        "seconds": elapsed,
        "writes_per_s": done[0] / elapsed,
        "latency_ops": args.latency_ops,
        "leader_is_load_node": str(leader) == args.me,
        **_summary(latencies),
    }
    Path(args.out).write_text(json.dumps(result))
    while True:
        time.sleep(3600)


# ----------------------------------------------------------------------------- coordinator


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "ruflo_consensus.runtime.bench", *argv],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _run_side(
    name: str, procs_argv: list[list[str]], out: Path, folder: Path, budget_s: float, tick: Any
) -> dict[str, Any]:
    procs = [_spawn(a, folder / f"{name}-{i}.log") for i, a in enumerate(procs_argv)]
    try:
        deadline = time.monotonic() + budget_s
        while not out.exists() or not out.read_text():
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    log = (folder / f"{name}-{i}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} worker {i} exited with {p.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not finish within {budget_s:.0f} s")
            tick()
            time.sleep(0.1)
        time.sleep(0.05)
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def run_bench_cluster(
    nodes: int = 3,
    seconds: float = 5.0,
    latency_ops: int = 500,
    pipeline: int = 256,
    fsync: bool = True,
    only: str | None = None,
    console: Any = None,
    pysyncobj_append_period: float | None = None,
    profile: str | None = None,
    parallel_append: bool = True,
) -> dict[str, Any]:
    """Run both clusters one after the other; return the numbers of each and the ratios.

    With ``profile`` our leader writes a cProfile of its pipelined phase to that file
    (read it with ``python -m pstats FILE``).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .localspec import free_ports, write_local_spec

    results: dict[str, Any] = {
        "nodes": nodes,
        "seconds": seconds,
        "pipeline": pipeline,
        "latency_ops": latency_ops,
        "fsync": fsync,
        "parallel_leader_append": parallel_append,
        "pysyncobj_append_period": pysyncobj_append_period,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()}",
        "python": platform.python_version(),
    }
    load = ["--seconds", str(seconds), "--pipeline", str(pipeline)]
    load += ["--latency-ops", str(latency_ops)]
    budget = 60 + seconds + latency_ops * 0.05
    sides = [s for s in ("ruflo", "pysyncobj") if only in (None, s)]
    with tempfile.TemporaryDirectory(prefix="ruflo-bench-cluster-") as tmp:
        folder = Path(tmp)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            for side in sides:
                task = progress.add_task(f"{side}: {nodes} nodes", total=seconds + 5)
                start = time.monotonic()

                def tick(task: Any = task, start: float = start) -> None:
                    progress.update(task, completed=min(seconds + 5, time.monotonic() - start))

                out = folder / f"{side}.json"
                if side == "ruflo":
                    spec = write_local_spec(
                        folder / "ruflo",
                        "mesh",
                        nodes,
                        runtime={
                            "fsync": fsync,
                            "max_sessions": max(256, pipeline),
                            "parallel_leader_append": parallel_append,
                        },
                    )
                    argv = [
                        [
                            "ruflo-node",
                            "--spec",
                            str(spec),
                            "--id",
                            f"n{i + 1}",
                            "--out",
                            str(out),
                            *load,
                            *(["--profile", str(Path(profile).resolve())] if profile else []),
                        ]
                        for i in range(nodes)
                    ]
                else:
                    addrs = [f"127.0.0.1:{p}" for p in free_ports(nodes)]
                    period = (
                        []
                        if pysyncobj_append_period is None
                        else ["--append-period", str(pysyncobj_append_period)]
                    )
                    argv = [
                        [
                            "pysyncobj-node",
                            addrs[i],
                            *[a for a in addrs if a != addrs[i]],
                            "--out",
                            str(out),
                            *load,
                            *period,
                        ]
                        for i in range(nodes)
                    ]
                results[side] = _run_side(side, argv, out, folder, budget, tick)
                progress.update(task, completed=seconds + 5)
    if "ruflo" in results and "pysyncobj" in results:
        ours, theirs = results["ruflo"], results["pysyncobj"]
        results["throughput_ratio"] = ours["writes_per_s"] / theirs["writes_per_s"]
        results["p99_ratio"] = ours["p99_ms"] / theirs["p99_ms"]
        results["p50_ratio"] = ours["p50_ms"] / theirs["p50_ms"]
    return results


def render_bench_cluster(results: dict[str, Any], console: Any) -> None:
    """The side-by-side table."""
    from rich.table import Table

    sides = [s for s in ("ruflo", "pysyncobj") if s in results]
    table = Table(
        title=f"bench cluster: {results['nodes']} nodes on 127.0.0.1, "
        f"pipeline {results['pipeline']}, fsync {'on' if results['fsync'] else 'off'} (ours)"
    )
    table.add_column("measure")
    for s in sides:
        table.add_column(s, justify="right")
    if len(sides) == 2:
        table.add_column("ratio (ours / theirs)", justify="right")
    rows = [
        ("committed writes/s (pipelined)", "writes_per_s", "throughput_ratio", "{:,.0f}"),
        ("p50 latency, one at a time (ms)", "p50_ms", "p50_ratio", "{:.2f}"),
        ("p99 latency, one at a time (ms)", "p99_ms", "p99_ratio", "{:.2f}"),
        ("mean latency (ms)", "mean_ms", None, "{:.2f}"),
    ]
    for label, key, ratio, fmt in rows:
        cells = [fmt.format(results[s][key]) for s in sides]
        if len(sides) == 2:
            cells.append(f"{results[ratio]:.2f}×" if ratio else "")
        table.add_row(label, *cells)
    table.add_row("load node was leader", *[str(results[s]["leader_is_load_node"]) for s in sides])
    console.print(table)


def run_bench_cluster_command(args: argparse.Namespace, out: Any, err: Any) -> int:
    """The ``bench cluster`` subcommand."""
    if args.nodes < 1 or args.pipeline < 1 or args.latency_ops < 1:
        message = "--nodes, --pipeline and --latency-ops must be positive"
        if args.json:
            print(json.dumps({"error": "bad-input", "message": message}))
        else:
            print(f"ruflo-consensus bench cluster: error: {message}", file=sys.stderr)
        return 2
    results = run_bench_cluster(
        nodes=args.nodes,
        seconds=args.seconds,
        latency_ops=args.latency_ops,
        pipeline=args.pipeline,
        fsync=not args.no_fsync,
        only=args.only,
        console=err,
        pysyncobj_append_period=args.pysyncobj_append_period,
        profile=args.profile,
        parallel_append=not args.serial_append,
    )
    if args.json:
        print(json.dumps(results))
    else:
        render_bench_cluster(results, out)
    return 0


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ruflo_consensus.runtime.bench")
    sub = parser.add_subparsers(dest="kind", required=True)
    r = sub.add_parser("ruflo-node")
    r.add_argument("--spec", required=True)
    r.add_argument("--id", required=True)
    r.add_argument("--profile", default=None)
    p = sub.add_parser("pysyncobj-node")
    p.add_argument("me")
    p.add_argument("partners", nargs="*")
    p.add_argument("--append-period", type=float, default=None)
    for s in (r, p):
        s.add_argument("--out", default=None)
        s.add_argument("--seconds", type=float, default=5.0)
        s.add_argument("--pipeline", type=int, default=256)
        s.add_argument("--latency-ops", type=int, default=500)
    args = parser.parse_args(argv)
    return _ruflo_worker(args) if args.kind == "ruflo-node" else _pysyncobj_worker(args)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
