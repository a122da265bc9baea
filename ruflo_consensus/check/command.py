"""Back ends of the ``ruflo-consensus check`` and ``bench-check`` commands.

The argparse wiring lives in :mod:`ruflo_consensus.cli`; these functions do the work and
return an exit code (``run_check``) or a result dict (``run_bench_check``).

Exit codes of :func:`run_check`, when several files are checked at once the first rule
that applies wins:

* ``2`` -- bad input: an unknown model, or any file that cannot be read or parsed, or that
  holds operations the model cannot interpret (the other files are still checked and
  reported);
* ``1`` -- some file is not linearizable;
* ``3`` -- some file could not be decided before the timeout (unknown);
* ``0`` -- every file is linearizable.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ruflo_consensus.check.generate import NetworkPartition, generate_history
from ruflo_consensus.check.history import HistoryError, load_history
from ruflo_consensus.check.linearizability import (
    DEFAULT_MEMO_BUDGET,
    CheckProgress,
    CheckResult,
    check_history,
)
from ruflo_consensus.check.models import (
    InvalidOperationError,
    Model,
    UnknownModelError,
    get_model,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_LINEARIZABLE",
    "EXIT_NOT_LINEARIZABLE",
    "EXIT_UNKNOWN",
    "run_bench_check",
    "run_check",
]

EXIT_LINEARIZABLE = 0
"""Every history is linearizable."""
EXIT_NOT_LINEARIZABLE = 1
"""At least one history is not linearizable (and no input was bad)."""
EXIT_BAD_INPUT = 2
"""Bad input: unknown model, or an unreadable / malformed history file."""
EXIT_UNKNOWN = 3
"""At least one history timed out undecided, none was bad or non-linearizable."""


def _error(message: str) -> None:
    """One line on stderr, with no traceback."""
    one_line = " ".join(message.split())
    sys.stderr.write(f"ruflo-consensus check: error: {one_line}\n")
    sys.stderr.flush()


def _emit_json(console: Console, record: dict[str, Any]) -> None:
    console.print(
        json.dumps(record, default=repr),
        markup=False,
        highlight=False,
        soft_wrap=True,
        crop=False,
    )


def _verdict_text(linearizable: bool | None) -> str:
    if linearizable is True:
        return "[green]linearizable[/green]"
    if linearizable is False:
        return "[bold red]NOT linearizable[/bold red]"
    return "[yellow]unknown[/yellow]"


_PROGRESS_EVERY = 1.0
"""Seconds between progress lines when stderr is not a terminal."""


@contextmanager
def _progress_reporter(
    path: str, console: Console, err: Console
) -> Iterator[Callable[[CheckProgress], None]]:
    """A ``progress`` callback for one file: a rich bar on a terminal, else JSON lines.

    The JSON lines go to stderr, one a second at most and only once the check has run
    for a second (small histories print nothing): ``{"file", "keys_done", "keys_total",
    "key", "configurations", "seconds"}``.
    """
    if console.is_terminal:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[keys]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{path} (reading, pairing)", total=None, keys="")

            def show(p: CheckProgress) -> None:
                where = "" if p.key is None else f" key {p.key!r}"
                bar.update(
                    task,
                    total=p.keys_total,
                    completed=p.keys_done,
                    description=f"{path}{where} ({p.configurations:,} configurations)",
                    keys=f"{p.keys_done}/{p.keys_total} keys",
                )

            yield show
        return
    last = [0.0]

    def line(p: CheckProgress) -> None:
        if p.seconds - last[0] < _PROGRESS_EVERY:
            return
        last[0] = p.seconds
        record = {
            "file": path,
            "keys_done": p.keys_done,
            "keys_total": p.keys_total,
            "key": p.key,
            "configurations": p.configurations,
            "seconds": round(p.seconds, 3),
        }
        err.file.write(json.dumps(record, default=repr) + "\n")
        err.file.flush()

    yield line


def _check_one(
    path: str,
    model: Model,
    timeout: float | None,
    memo_budget: int | None = DEFAULT_MEMO_BUDGET,
    progress: Callable[[CheckProgress], None] | None = None,
) -> CheckResult | str:
    """Check one file; return the result, or an error message for bad input."""
    try:
        ops = load_history(path)
        return check_history(
            ops, model, timeout=timeout, memo_budget=memo_budget, progress=progress
        )
    except (HistoryError, InvalidOperationError) as exc:
        return str(exc) if isinstance(exc, HistoryError) else f"{path}: {exc}"
    except RecursionError:
        return f"{path}: history too deeply nested"
    except Exception as exc:  # a user model failing must not become a traceback
        return f"{path}: model {model.name!r} failed: {type(exc).__name__}: {exc}"


def run_check(
    paths: list[str],
    model: str,
    timeout: float | None,
    as_json: bool,
    console: Console | None = None,
    memo_budget: int | None = DEFAULT_MEMO_BUDGET,
    progress: bool = True,
) -> int:
    """Check every history file in ``paths`` against ``model``; return the exit code.

    ``memo_budget`` bounds each partition's search (see
    :func:`~ruflo_consensus.check.linearizability.check_history`). With ``progress``, a
    check shows a progress bar when ``console`` is a terminal (and not ``as_json``), and
    otherwise writes a JSON progress line to stderr every second once it has run for a
    second. Unknown results (timeout or memo budget) carry a ``"reason"`` in JSON.

    Output goes to ``console`` (a new stdout console when ``None``): with ``as_json``, one
    JSON object per file per line, ``{"file", "linearizable" (true/false/null),
    "operations", "seconds"}`` plus ``"partitions"``, and ``"error"`` (with
    ``linearizable: null``) for a bad file; otherwise a table, followed by the failure
    window of every non-linearizable file. Errors are also written to stderr, one line
    each. See the module docstring for the exit codes and their precedence.
    """
    out = console if console is not None else Console()
    try:
        chosen = get_model(model)
    except UnknownModelError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    if timeout is not None and timeout < 0:
        _error(f"timeout must be non-negative, got {timeout}")
        return EXIT_BAD_INPUT
    if not paths:
        _error("no history files given")
        return EXIT_BAD_INPUT
    if memo_budget is not None and memo_budget < 1:
        _error(f"memo budget must be at least 1, got {memo_budget}")
        return EXIT_BAD_INPUT
    err = Console(stderr=True)

    bad = failed = unknown = False
    results: list[tuple[str, CheckResult | str]] = []
    for path in paths:
        if progress:
            with _progress_reporter(path, out if not as_json else err, err) as show:
                outcome = _check_one(path, chosen, timeout, memo_budget, show)
        else:
            outcome = _check_one(path, chosen, timeout, memo_budget)
        results.append((path, outcome))
        if isinstance(outcome, str):
            bad = True
            _error(outcome)
            if as_json:
                _emit_json(
                    out,
                    {
                        "file": path,
                        "linearizable": None,
                        "operations": 0,
                        "seconds": 0.0,
                        "error": outcome,
                    },
                )
            continue
        if outcome.linearizable is False:
            failed = True
        elif outcome.linearizable is None:
            unknown = True
        if as_json:
            _emit_json(
                out,
                {
                    "file": path,
                    "linearizable": outcome.linearizable,
                    "operations": outcome.operations,
                    "seconds": round(outcome.seconds, 6),
                    "partitions": outcome.partitions,
                    **({"reason": outcome.reason} if outcome.reason else {}),
                },
            )

    if not as_json:
        table = Table(title=f"Linearizability check (model {chosen.name!r})")
        table.add_column("file", overflow="fold")
        table.add_column("result")
        table.add_column("operations", justify="right")
        table.add_column("partitions", justify="right")
        table.add_column("seconds", justify="right")
        for path, outcome in results:
            if isinstance(outcome, str):
                table.add_row(path, "[bold magenta]error[/bold magenta]", "-", "-", "-")
            else:
                table.add_row(
                    path,
                    _verdict_text(outcome.linearizable),
                    str(outcome.operations),
                    str(outcome.partitions),
                    f"{outcome.seconds:.3f}",
                )
        out.print(table)
        for path, outcome in results:
            if isinstance(outcome, CheckResult) and outcome.linearizable is None:
                out.print(
                    f"{path}: unknown: {outcome.reason}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        for path, outcome in results:
            if isinstance(outcome, CheckResult) and outcome.failure is not None:
                out.print(f"\n[bold]{path}[/bold]", highlight=False)
                out.print(outcome.failure.render(), markup=False, highlight=False, soft_wrap=True)

    if bad:
        return EXIT_BAD_INPUT
    if failed:
        return EXIT_NOT_LINEARIZABLE
    if unknown:
        return EXIT_UNKNOWN
    return EXIT_LINEARIZABLE


def _measure(
    history: list[Any], rounds: int, timeout: float | None, memo_budget: int | None
) -> tuple[CheckResult, list[float], float]:
    """Check ``history`` ``rounds`` times; then once more under tracemalloc.

    Returns the last result, the seconds of each timed round and the peak traced memory
    (MiB) of the extra round (tracemalloc slows Python down, so it is not timed).
    """
    times: list[float] = []
    result: CheckResult | None = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = check_history(history, "kv", timeout=timeout, memo_budget=memo_budget)
        times.append(time.perf_counter() - start)
    assert result is not None
    tracemalloc.start()
    try:
        check_history(history, "kv", timeout=timeout, memo_budget=memo_budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, times, peak / 2**20


def run_bench_check(
    n_ops: int = 10000,
    n_clients: int = 10,
    n_keys: int = 10,
    seed: int = 0,
    rounds: int = 3,
    as_json: bool = False,
    console: Console | None = None,
    partition: bool = False,
    memo_budget: int | None = DEFAULT_MEMO_BUDGET,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Benchmark the checker on generated kv histories; print and return the figures.

    Generates a kv history with :func:`generate_history` (``n_ops`` operations,
    ``n_clients`` clients, ``n_keys`` keys, ``seed``) and checks it ``rounds`` times,
    then once more under :mod:`tracemalloc` for its peak memory. With ``partition``, two
    histories are measured: one with a :class:`NetworkPartition` that keeps it
    linearizable (the cut-off clients time out) and one whose partition serves stale
    reads of key 0 (not linearizable). ``memo_budget`` and ``timeout`` are passed to
    :func:`check_history`.

    Returns a dict with ``n_ops``, ``n_clients``, ``n_keys``, ``seed``, ``rounds``,
    ``partition``, ``histories`` (one dict per history: ``name``, ``events``,
    ``partitions``, ``linearizable``, ``reason``, ``seconds`` of every round,
    ``best_seconds``, ``median_seconds``, ``ops_per_second_best``,
    ``ops_per_second_median``, ``peak_traced_mib``) and ``max_rss_mib`` (the process's
    peak resident size); the first history's figures are repeated at the top level.
    Prints it as one JSON line with ``as_json``, else as a table. Raises
    :class:`ValueError` unless ``n_ops``, ``n_clients``, ``n_keys`` and ``rounds`` are
    positive (and ``n_clients >= 2`` with ``partition``).
    """
    for name, value in (
        ("operations", n_ops),
        ("clients", n_clients),
        ("keys", n_keys),
        ("rounds", rounds),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if partition and n_clients < 2:
        raise ValueError("a partition needs at least 2 clients")
    out = console if console is not None else Console()
    plans: list[tuple[str, NetworkPartition | None]] = [("linearizable", None)]
    if partition:
        plans = [
            ("partition, linearizable", NetworkPartition(key=0)),
            ("partition, stale reads of key 0", NetworkPartition(key=0, stale=True)),
        ]
    histories: list[dict[str, Any]] = []
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task(f"checking {n_ops} ops", total=len(plans))
        for name, cut in plans:
            history = generate_history("kv", n_ops, n_clients, seed, n_keys=n_keys, partition=cut)
            result, times, peak = _measure(history, rounds, timeout, memo_budget)
            best = min(times)
            median = statistics.median(times)
            histories.append(
                {
                    "name": name,
                    "events": len(history),
                    "partitions": result.partitions,
                    "linearizable": result.linearizable,
                    "reason": result.reason,
                    "seconds": [round(t, 6) for t in times],
                    "best_seconds": round(best, 6),
                    "median_seconds": round(median, 6),
                    "ops_per_second_best": round(n_ops / best, 1) if best > 0 else None,
                    "ops_per_second_median": round(n_ops / median, 1) if median > 0 else None,
                    "peak_traced_mib": round(peak, 1),
                }
            )
            progress.advance(task)
    first = histories[0]
    report: dict[str, Any] = {
        "n_ops": n_ops,
        "n_clients": n_clients,
        "n_keys": n_keys,
        "seed": seed,
        "rounds": rounds,
        "partition": partition,
        **{k: v for k, v in first.items() if k != "name"},
        "histories": histories,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if as_json:
        _emit_json(out, report)
        return report
    table = Table(title=f"Linearizability checker benchmark (model 'kv', {n_ops} operations)")
    table.add_column("history")
    table.add_column("result")
    table.add_column("best s", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("ops / second (best)", justify="right")
    table.add_column("peak traced MiB", justify="right")
    for entry in histories:
        verdict = _verdict_text(entry["linearizable"])
        table.add_row(
            f"{entry['name']} ({entry['events']} events, {entry['partitions']} keys)",
            verdict,
            f"{entry['best_seconds']:.4f}",
            f"{entry['median_seconds']:.4f}",
            f"{entry['ops_per_second_best']:,.0f}" if entry["ops_per_second_best"] else "-",
            f"{entry['peak_traced_mib']:.1f}",
        )
    table.caption = (
        f"{n_clients} clients, {n_keys} keys, seed {seed}, {rounds} rounds; "
        f"process peak RSS {report['max_rss_mib']:.0f} MiB"
    )
    out.print(table)
    for entry in histories:
        if entry["reason"]:
            out.print(
                f"{entry['name']}: {entry['reason']}", markup=False, highlight=False, soft_wrap=True
            )
    return report
