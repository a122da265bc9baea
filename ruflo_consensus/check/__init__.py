"""Linearizability checking of operation histories.

Load a history (:func:`load_history`), pick a sequential model (:func:`get_model`, or a
:class:`Model` subclass of your own) and call :func:`check_history`::

    from ruflo_consensus.check import check_history, load_history

    result = check_history(load_history("history.jsonl"), "kv", timeout=10.0)
    if result.linearizable is False and result.failure is not None:
        print(result.failure.render())

See ``docs/checker.md`` for the formats, the model API and the CLI.
"""

from ruflo_consensus.check.convergence import (
    AckedWrite,
    ClientRead,
    ConvergenceReport,
    check_acknowledged_writes,
    check_convergence,
    check_monotonic_reads,
    converged,
)
from ruflo_consensus.check.generate import generate_history, mutate_history
from ruflo_consensus.check.history import (
    HistoryError,
    Op,
    dump_history_jsonl,
    load_history,
    ops_to_jsonl,
)
from ruflo_consensus.check.linearizability import (
    CheckResult,
    FailureReport,
    check_history,
    pair_operations,
)
from ruflo_consensus.check.models import (
    InvalidOperationError,
    KVModel,
    Model,
    Operation,
    RegisterModel,
    UnknownModelError,
    get_model,
    model_names,
    register_model,
)

__all__ = [
    "AckedWrite",
    "CheckResult",
    "ClientRead",
    "ConvergenceReport",
    "FailureReport",
    "HistoryError",
    "InvalidOperationError",
    "KVModel",
    "Model",
    "Op",
    "Operation",
    "RegisterModel",
    "UnknownModelError",
    "check_acknowledged_writes",
    "check_convergence",
    "check_history",
    "check_monotonic_reads",
    "converged",
    "dump_history_jsonl",
    "generate_history",
    "get_model",
    "load_history",
    "model_names",
    "mutate_history",
    "ops_to_jsonl",
    "pair_operations",
    "register_model",
]
