"""How long writing and reopening a large WAL takes, and how much memory reopening uses.

:func:`bench_reopen` writes ``entries`` entries in ``save()`` batches of ``batch`` (each
with a hard state, as a Raft follower's Ready would carry), with a snapshot every
``snapshot_every`` entries if asked, closes the storage, then opens the directory again
and calls ``load()`` — in a fresh Python process, so that the peak RSS it reports belongs
to the reopen alone and not to the writing that came before.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..core.base import Entry, HardState, Persist, Proposal, Snapshot
from .file import FileStorage

__all__ = ["bench_reopen", "main", "measure_reopen"]


def _maxrss_bytes() -> int:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def measure_reopen(directory: str | Path, trace: bool = False) -> dict[str, Any]:
    """Open ``directory`` with :class:`FileStorage`, ``load()`` it, and measure that.

    Returns wall and CPU seconds (CPU time is the steadier number on a shared machine),
    peak RSS of this process before and after, the entry count and —
    with ``trace`` — tracemalloc's peak and the memory still held after ``load()`` (the
    difference is what the scan itself needed beyond its result). Run it in a fresh
    process for a meaningful peak RSS; tracing slows the reopen down several times.
    """
    import gc
    import tracemalloc

    gc.collect()
    baseline = _maxrss_bytes()
    if trace:
        tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    storage = FileStorage(directory)
    state = storage.load()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    snap_index = state.snapshot.index if state.snapshot is not None else 0
    out: dict[str, Any] = {
        "reopen_seconds": seconds,
        "reopen_cpu_seconds": cpu,
        "entries_loaded": len(state.entries),
        "snapshot_index": snap_index,
        "last_index": state.entries[-1].index if state.entries else snap_index,
        "records": storage.recovery.records,
        "segments": storage.recovery.segments,
        "baseline_rss_bytes": baseline,
        "reopen_peak_rss_bytes": _maxrss_bytes(),
    }
    if trace:
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc_peak_bytes"] = peak
        out["tracemalloc_retained_bytes"] = retained
        out["tracemalloc_scan_overhead_bytes"] = peak - retained
    storage.close()
    del state
    return out


_CHILD = """
import json, sys
from ruflo_consensus.storage.bench import measure_reopen
print(json.dumps(measure_reopen(sys.argv[1], trace=sys.argv[2] == "1")))
"""


def _measure_in_child(directory: str, trace: bool) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, directory, "1" if trace else "0"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_reopen(
    directory: str | Path,
    entries: int = 1_000_000,
    batch: int = 1000,
    *,
    fsync: bool = True,
    segment_bytes: int = 64 << 20,
    trace: bool = True,
    in_process: bool = False,
    snapshot_every: int = 0,
    snapshot_bytes: int = 1 << 20,
) -> dict[str, Any]:
    """Write ``entries`` entries to a new WAL in ``directory``, then reopen and load it.

    Each entry's command is ``{"op": "put", "key": f"k{i}", "value": "v"}`` from client
    ``"c1"``. ``directory`` must be missing or empty. With ``snapshot_every`` a snapshot
    of ``snapshot_bytes`` bytes is saved each time the log passes another multiple of it
    (at the end of the batch that crosses it), as a Raft node answering its core's
    snapshot requests would; reopening then returns only the entries after the last one.
    The reopen runs in a fresh Python process unless ``in_process`` (then the peak RSS
    also counts the writing); with ``trace`` a second fresh process repeats it under
    tracemalloc.

    Returns a JSON-ready dict: ``write_seconds`` (time inside ``save()`` only),
    ``reopen_seconds``,
    ``reopen_peak_rss_bytes`` (and ``baseline_rss_bytes``, the same process before
    reopening), ``tracemalloc_peak_bytes`` / ``tracemalloc_retained_bytes`` with
    ``trace``, ``file_bytes``, ``segments``, and the machine.
    """
    if entries < 1 or batch < 1:
        raise ValueError("entries and batch must be positive")
    if snapshot_every < 0 or snapshot_bytes < 0:
        raise ValueError("snapshot_every and snapshot_bytes must not be negative")
    path = Path(directory)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"{path} is not empty")
    storage = FileStorage(path, fsync=fsync, segment_bytes=segment_bytes)
    write_seconds = 0.0
    snapshot_seconds = 0.0
    snapshots = 0
    last_snapshot = 0
    blob = bytes(range(256)) * (snapshot_bytes // 256) + bytes(snapshot_bytes % 256)
    index = 1
    while index <= entries:
        n = min(batch, entries - index + 1)
        chunk = [
            Entry(1, i, Proposal("c1", i, {"op": "put", "key": f"k{i}", "value": "v"}))
            for i in range(index, index + n)
        ]
        persist = Persist(
            hard_state=HardState(1, "n1", index - 1), truncate_from=index, entries=chunk
        )
        start = time.perf_counter()
        storage.save(persist)  # only save() is timed, not building the entries
        write_seconds += time.perf_counter() - start
        index += n
        last = index - 1
        if snapshot_every and last // snapshot_every > last_snapshot // snapshot_every:
            start = time.perf_counter()
            storage.save_snapshot(Snapshot(last, 1, ("n1", "n2", "n3"), (), blob))
            snapshot_seconds += time.perf_counter() - start
            snapshots += 1
            last_snapshot = last
    storage.close()
    file_bytes = sum(p.stat().st_size for p in path.iterdir() if p.is_file())

    if in_process:
        reopen = measure_reopen(path, trace=False)
        traced = measure_reopen(path, trace=True) if trace else {}
    else:
        reopen = _measure_in_child(str(path), trace=False)
        traced = _measure_in_child(str(path), trace=True) if trace else {}
    expected = entries - last_snapshot
    if reopen["entries_loaded"] != expected or reopen["last_index"] != entries:
        raise AssertionError(
            f"reopen loaded {reopen['entries_loaded']} entries up to {reopen['last_index']}, "
            f"expected {expected} up to {entries}"
        )
    result: dict[str, Any] = {
        "benchmark": "storage-reopen",
        "entries": entries,
        "batch": batch,
        "fsync": fsync,
        "segment_bytes": segment_bytes,
        "write_seconds": write_seconds,
        "snapshot_every": snapshot_every,
        "snapshots": snapshots,
        "snapshot_bytes": snapshot_bytes if snapshots else 0,
        "snapshot_seconds": snapshot_seconds,
        "file_bytes": file_bytes,
        **reopen,
        "reopen_rss_growth_bytes": reopen["reopen_peak_rss_bytes"] - reopen["baseline_rss_bytes"],
        "reopen_in_fresh_process": not in_process,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
    }
    for key in (
        "tracemalloc_peak_bytes",
        "tracemalloc_retained_bytes",
        "tracemalloc_scan_overhead_bytes",
    ):
        if key in traced:
            result[key] = traced[key]
    if traced:
        result["traced_reopen_seconds"] = traced["reopen_seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m ruflo_consensus.storage DIR [--entries N] [--batch B] [--no-fsync]``.

    Prints the :func:`bench_reopen` result as JSON (until the CLI's ``bench storage``).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ruflo_consensus.storage")
    parser.add_argument("directory", help="a missing or empty directory to write the WAL in")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--segment-bytes", type=int, default=64 << 20)
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync while writing")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc rerun")
    parser.add_argument("--snapshot-every", type=int, default=0)
    parser.add_argument("--snapshot-bytes", type=int, default=1 << 20)
    args = parser.parse_args(argv)
    result = bench_reopen(
        args.directory,
        entries=args.entries,
        batch=args.batch,
        fsync=not args.no_fsync,
        segment_bytes=args.segment_bytes,
        trace=not args.no_trace,
        snapshot_every=args.snapshot_every,
        snapshot_bytes=args.snapshot_bytes,
    )
    print(json.dumps(result, indent=2))
    return 0
