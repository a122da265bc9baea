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
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ruflo_consensus.check.generate import generate_history
from ruflo_consensus.check.history import HistoryError, load_history
from ruflo_consensus.check.linearizability import CheckResult, check_history
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
    return "[yellow]unknown (timeout)[/yellow]"


def _check_one(path: str, model: Model, timeout: float | None) -> CheckResult | str:
    """Check one file; return the result, or an error message for bad input."""
    try:
        ops = load_history(path)
        return check_history(ops, model, timeout=timeout)
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
) -> int:
    """Check every history file in ``paths`` against ``model``; return the exit code.

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

    bad = failed = unknown = False
    results: list[tuple[str, CheckResult | str]] = []
    for path in paths:
        outcome = _check_one(path, chosen, timeout)
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


def run_bench_check(
    n_ops: int = 10000,
    n_clients: int = 10,
    n_keys: int = 10,
    seed: int = 0,
    rounds: int = 3,
    as_json: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Benchmark the checker on a generated kv history; print and return the figures.

    Generates a linearizable kv history with :func:`generate_history` (``n_ops``
    operations, ``n_clients`` clients, ``n_keys`` keys, ``seed``), checks it ``rounds``
    times (with a progress bar unless ``as_json``), and reports seconds per check (best
    and median) and operations per second (from the best and the median). Returns a
    dict with ``n_ops``, ``n_clients``, ``n_keys``, ``seed``, ``rounds``, ``events``,
    ``partitions``, ``linearizable``, ``seconds`` (every round), ``best_seconds``,
    ``median_seconds``, ``ops_per_second_best`` and ``ops_per_second_median``; prints it
    as one JSON line with ``as_json``, else as a table.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    out = console if console is not None else Console()
    history = generate_history("kv", n_ops, n_clients, seed, n_keys=n_keys)
    times: list[float] = []
    result: CheckResult | None = None
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task(f"checking {n_ops} ops", total=rounds)
        for _ in range(rounds):
            start = time.perf_counter()
            result = check_history(history, "kv")
            times.append(time.perf_counter() - start)
            progress.advance(task)
    assert result is not None
    best = min(times)
    median = statistics.median(times)
    report: dict[str, Any] = {
        "n_ops": n_ops,
        "n_clients": n_clients,
        "n_keys": n_keys,
        "seed": seed,
        "rounds": rounds,
        "events": len(history),
        "partitions": result.partitions,
        "linearizable": result.linearizable,
        "seconds": [round(t, 6) for t in times],
        "best_seconds": round(best, 6),
        "median_seconds": round(median, 6),
        "ops_per_second_best": round(n_ops / best, 1) if best > 0 else None,
        "ops_per_second_median": round(n_ops / median, 1) if median > 0 else None,
    }
    if as_json:
        _emit_json(out, report)
    else:
        table = Table(title="Linearizability checker benchmark (model 'kv')")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("operations", str(n_ops))
        table.add_row("clients / keys", f"{n_clients} / {n_keys}")
        table.add_row("history events", str(len(history)))
        table.add_row("partitions", str(result.partitions))
        table.add_row("linearizable", str(result.linearizable))
        table.add_row("rounds", str(rounds))
        table.add_row("best seconds / check", f"{best:.4f}")
        table.add_row("median seconds / check", f"{median:.4f}")
        table.add_row("ops / second (best)", f"{n_ops / best:,.0f}" if best > 0 else "-")
        table.add_row("ops / second (median)", f"{n_ops / median:,.0f}" if median > 0 else "-")
        out.print(table)
    return report
