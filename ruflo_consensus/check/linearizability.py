"""Linearizability checking: the Wing-Gong-Lowe search with memoisation.

A history is *linearizable* with respect to a sequential model if every operation can be
given a single instant between its invoke and its completion such that applying the
operations in the order of those instants, one at a time, to the model produces exactly
the results the clients observed. ``fail`` operations did not happen and are dropped;
``info`` operations (and invokes that never completed) may or may not have happened, so
their return is placed at +infinity and the search may also leave them out.

The search (Wing & Gong, with Lowe's memoisation, as popularised by Porcupine) keeps the
call and return events of one partition in a doubly linked list in history order. It
scans from the head: a *call* event whose operation is legal in the current model state
is linearised -- its call and return entries are lifted out of the list and the scan
restarts at the head; a *return* event means the operation that returns there has not
been linearised although it must precede everything that follows, so the search
backtracks (restores the most recently linearised operation and tries the next
candidate). Every configuration (set of linearised operations as an int bitset, model
state) is recorded, so the same configuration is never explored twice. The history is
linearizable iff every ``ok`` operation can be linearised this way; ``info`` operations
still unplaced at that point are taken not to have happened.

Models may split a history into partitions (for example by key); by P-compositionality
the history is linearizable iff every partition is.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruflo_consensus.check.history import Op, validate_pairing
from ruflo_consensus.check.models import Model, Operation, get_model

__all__ = [
    "CheckResult",
    "FailureReport",
    "check_history",
    "pair_operations",
]

_TIME_CHECK_INTERVAL = 1024
"""The search looks at the clock once every this many steps."""


_PLAIN = frozenset({int, str, float, bool, type(None), bytes})


def _freeze(value: Any) -> Any:
    """Make values hashable: lists -> tuples, dicts -> frozensets of items, sets -> frozen."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((_freeze(k), _freeze(v)) for k, v in value.items())
    if isinstance(value, set):
        return frozenset(_freeze(v) for v in value)
    return value


def pair_operations(ops: Sequence[Op]) -> list[Operation]:
    """Pair invokes with completions; return the ``ok`` and ``info`` operations.

    ``fail`` operations are left out (they did not happen). Invokes still outstanding at
    the end of the history become ``info`` operations with ``ret=None``. Operations are
    numbered (:attr:`Operation.index`) in invoke order over the whole history, including
    failed ones, and returned in invoke order. Raises
    :class:`~ruflo_consensus.check.history.HistoryError` on pairing errors.
    """
    validate_pairing(ops)
    pending: dict[int | str, tuple[int, int]] = {}
    slots: list[Operation | None] = []
    for pos, op in enumerate(ops):
        if op.type == "invoke":
            pending[op.process] = (pos, len(slots))
            slots.append(None)
            continue
        call, index = pending.pop(op.process)
        if op.type == "fail":
            continue
        inv = ops[call]
        ok = op.type == "ok"
        slots[index] = Operation(
            index=index,
            process=inv.process,
            f=inv.f,
            key=_freeze(inv.key),
            input=_freeze(inv.value),
            output=_freeze(op.value) if ok else None,
            call=call,
            ret=pos,
            status="ok" if ok else "info",
        )
    for call, index in pending.values():
        inv = ops[call]
        slots[index] = Operation(
            index=index,
            process=inv.process,
            f=inv.f,
            key=_freeze(inv.key),
            input=_freeze(inv.value),
            output=None,
            call=call,
            ret=None,
            status="info",
        )
    return [op for op in slots if op is not None]


@dataclass(slots=True)
class _Outcome:
    """Internal result of searching one partition."""

    linearizable: bool | None
    best_prefix: list[Operation] = field(default_factory=list)
    best_state: Any = None
    blocking: Operation | None = None


def _search(
    model: Model,
    ops: Sequence[Operation],
    init_state: Hashable,
    deadline: float | None,
) -> _Outcome:
    """Run the WGL/Lowe search over ``ops`` (one partition) from ``init_state``.

    Returns linearizable True / False / None (deadline passed). On False, also the
    deepest configuration reached: the linearised operations in order, the state after
    them, and the operation whose return event stopped the search there.

    The set of linearised operations is kept as ``(low, bits)``: operations are numbered
    in call order, the first ``low`` of them are all linearised, and ``bits`` holds the
    rest shifted down by ``low``. That is canonical, so ``(low, bits, state)`` is the memo
    key, and it stays a small int even in a long history.
    """
    opl = sorted(ops, key=lambda op: op.call)
    n = len(opl)
    is_ok = [op.status == "ok" for op in opl]
    remaining = sum(is_ok)  # ok operations still to place; info ones may stay out
    if remaining == 0:
        return _Outcome(True)
    # Events sorted by history position; info returns go after every real event, in
    # call order.
    beyond = 1 << 62
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(opl):
        events.append((op.call, 0, i))
        ret = op.ret
        events.append((ret if op.status == "ok" and ret is not None else beyond + op.call, 1, i))
    events.sort()

    m = 2 * n
    head = m
    nxt = [*range(1, m), -1, 0]  # index m is the head sentinel
    prv = [head, *range(0, m - 1), -1]
    match = [-1] * m  # call event -> its return event; -1 for return events
    evop = [0] * m  # event -> operation number
    call_ev = [0] * n
    for e, (_, kind, i) in enumerate(events):
        evop[e] = i
        if kind == 0:
            call_ev[i] = e
        else:
            match[call_ev[i]] = e

    step = model.step
    monotonic = time.monotonic
    pure = [model.read_only(op) for op in opl]
    state: Any = init_state
    low = 0
    bits = 0
    # (call event, state, low, bits, committed) before each linearised operation;
    # committed marks a read-only op placed as soon as it was legal (no alternatives).
    stack: list[tuple[int, Any, int, int, bool]] = []
    seen: set[tuple[int, int, Any]] = set()
    best_depth = -1
    best_events: list[int] = []
    best_state: Any = init_state
    blocking = -1
    low_water = 0  # stack entries below this are unchanged since best_events was taken
    countdown = _TIME_CHECK_INTERVAL

    e = nxt[head]
    while True:
        countdown -= 1
        if countdown == 0:
            countdown = _TIME_CHECK_INTERVAL
            if deadline is not None and monotonic() > deadline:
                return _Outcome(None)
        r = match[e]
        if r >= 0:
            i = evop[e]
            legal, new_state = step(state, opl[i])
            if not legal:
                e = nxt[e]
                continue
            j = i - low
            if j:
                new_low = low
                new_bits = bits | (1 << j)
            else:
                # bit 0 becomes set: absorb the run of trailing ones into low
                new_bits = bits | 1
                ones = (~new_bits & (new_bits + 1)).bit_length() - 1
                new_low = low + ones
                new_bits >>= ones
            config = (new_low, new_bits, new_state)
            if config not in seen:
                seen.add(config)
                stack.append((e, state, low, bits, pure[i]))
                state = new_state
                low = new_low
                bits = new_bits
                # lift the call and its return out of the list
                p = prv[e]
                q = nxt[e]
                nxt[p] = q
                prv[q] = p
                p = prv[r]
                q = nxt[r]
                nxt[p] = q
                if q != -1:
                    prv[q] = p
                if is_ok[i]:
                    remaining -= 1
                    if remaining == 0:
                        return _Outcome(True)
                e = nxt[head]
                continue
            if not pure[i]:
                e = nxt[e]
                continue
            # A legal read-only op whose successor configuration already failed: this
            # configuration fails too (see read_only), so fall through to backtrack.
        else:
            # A return of an operation that is not linearised yet: backtrack.
            depth = len(stack)
            if depth > best_depth:
                best_depth = depth
                del best_events[low_water:]
                best_events.extend(entry[0] for entry in stack[low_water:])
                low_water = depth
                best_state = state
                blocking = evop[e]
        while True:
            if not stack:
                return _Outcome(
                    False,
                    [opl[evop[c]] for c in best_events],
                    best_state,
                    opl[blocking],
                )
            e, state, low, bits, committed = stack.pop()
            if len(stack) < low_water:
                low_water = len(stack)
            if is_ok[evop[e]]:
                remaining += 1
            # unlift: put the return back, then the call
            r = match[e]
            p = prv[r]
            q = nxt[r]
            nxt[p] = r
            if q != -1:
                prv[q] = r
            p = prv[e]
            nxt[p] = e
            prv[nxt[e]] = e
            if not committed:
                break
        e = nxt[e]


def _position(op: Operation) -> str:
    return "inf" if op.status != "ok" or op.ret is None else str(op.ret + 1)


@dataclass(frozen=True, slots=True)
class FailureReport:
    """Where the search got stuck in a non-linearizable partition.

    The search tracks the *deepest* configuration it reached: a sequence ``prefix`` of
    operations that is a legal sequential execution of the model and respects real time
    (if an operation in it was invoked after some operation returned, that operation is
    in it too, earlier), and ``state``, the model state after it. The search is exhaustive
    up to memoisation, so no longer such prefix exists among the partition's operations
    (after :meth:`~ruflo_consensus.check.models.Model.simplify`).

    ``blocking`` is the first operation not in the prefix to return: it has to be
    linearised before any operation invoked after that return. ``window`` holds every
    operation not in the prefix that was invoked before ``blocking`` returned
    (``blocking`` included) -- exactly the operations that could come next. **None of
    them is legal from** ``state``: had one been, the prefix could be extended, and it
    is a longest one. So, given that prefix, the window is a self-contained witness:
    whichever of its operations is placed next, the model rejects it.

    The prefix is one longest prefix, not necessarily the only one, and not necessarily
    where the bug is: a faulty system may have ordered operations inside the prefix
    differently from what the clients later observed. It is also not guaranteed to be
    the shortest contiguous slice of the history that is non-linearizable.

    Positions (``call``/``ret`` of the operations) are 0-based event positions in the
    history list; :meth:`render` shows them 1-based, which for a file without blank lines
    are its line numbers.
    """

    model: Model = field(repr=False, compare=False)
    partition: int
    partitions: int
    key: Any
    partition_operations: int
    prefix: tuple[Operation, ...]
    state: Any
    blocking: Operation
    window: tuple[Operation, ...]

    def render(self, prefix_tail: int = 5) -> str:
        """A readable multi-line explanation (plain text).

        ``prefix_tail`` is how many of the last prefix operations to list.
        """
        model = self.model
        where = f"partition {self.partition + 1} of {self.partitions}"
        if self.key is not None:
            where += f" (key {self.key!r})"
        lines = [
            f"Not linearizable under model {model.name!r}: {where}, "
            f"{self.partition_operations} operations in this partition.",
            f"Longest linearizable prefix found: {len(self.prefix)} operations.",
        ]
        if self.prefix:
            shown = self.prefix[-prefix_tail:] if prefix_tail > 0 else ()
            if len(shown) < len(self.prefix):
                lines.append(f"  ... ({len(self.prefix) - len(shown)} earlier operations)")
            for op in shown:
                lines.append(f"  {self._op_line(op)}")
        lines.append(f"Model state after that prefix: {model.describe_state(self.state)}")
        lines.append("Operation that could not be linearized:")
        lines.append(f"  {self._op_line(self.blocking)}")
        lines.append(
            f"Window: the {len(self.window)} operation(s) not in the prefix that were invoked "
            "before it returned. One of them would have to come next, but none can be applied "
            "to that state (otherwise a longer prefix would exist):"
        )
        width = max(len(model.describe_op(op)) for op in self.window)
        width = max(width, len("operation"))
        lines.append(
            f"  {'op':>7}  {'process':>8}  {'operation':<{width}}  {'call':>7}  {'return':>7}"
        )
        for op in self.window:
            mark = "  <- could not be linearized" if op is self.blocking else ""
            lines.append(
                f"  {'#' + str(op.index):>7}  {op.process!s:>8}  "
                f"{model.describe_op(op):<{width}}  {op.call + 1:>7}  {_position(op):>7}{mark}"
            )
        lines.append(
            "Positions are 1-based history event numbers; 'inf' marks an info operation, "
            "whose return is treated as the end of the history."
        )
        return "\n".join(lines)

    def _op_line(self, op: Operation) -> str:
        return (
            f"#{op.index} process {op.process}: {self.model.describe_op(op)}  "
            f"[call {op.call + 1}, return {_position(op)}]"
        )


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of :func:`check_history`.

    ``linearizable`` is True, False, or None when the timeout expired before every
    partition was decided (and none was found non-linearizable). ``operations`` counts
    the invocations in the history (ok, fail, info and never-completed ones), ``seconds``
    is the wall-clock time of the whole check, ``partitions`` the number of non-empty
    partitions the model produced, and ``failure`` explains the first non-linearizable
    partition found.
    """

    linearizable: bool | None
    operations: int
    seconds: float
    partitions: int
    failure: FailureReport | None = None


def _partition_key(part: Sequence[Operation]) -> Any:
    first = part[0].key
    return first if all(op.key == first for op in part) else None


def _explain(
    model: Model,
    part: list[Operation],
    outcome: _Outcome,
    index: int,
    partitions: int,
) -> FailureReport:
    prefix = tuple(outcome.best_prefix)
    done = {op.index for op in prefix}
    blocking = outcome.blocking
    assert blocking is not None
    limit = blocking.ret if blocking.status == "ok" and blocking.ret is not None else None
    window = tuple(
        op
        for op in sorted(part, key=lambda op: op.call)
        if op.index not in done and (limit is None or op.call < limit)
    )
    state = outcome.best_state
    return FailureReport(
        model=model,
        partition=index,
        partitions=partitions,
        key=_partition_key(part),
        partition_operations=len(part),
        prefix=prefix,
        state=state,
        blocking=blocking,
        window=window,
    )


def check_history(
    ops: Sequence[Op],
    model: Model | str,
    timeout: float | None = None,
) -> CheckResult:
    """Decide whether ``ops`` (a history in real-time order) is linearizable under ``model``.

    ``model`` is a :class:`~ruflo_consensus.check.models.Model` or a registered name
    (``"register"``, ``"kv"``, ...). ``timeout`` (seconds of wall-clock time, measured with
    :func:`time.monotonic`) bounds the whole check; when it expires before every partition
    is decided the result is ``linearizable=None`` (unknown) unless a partition was
    already found non-linearizable. Partitions are checked in the order the model returns
    them and the check stops at the first non-linearizable one.

    Raises :class:`~ruflo_consensus.check.history.HistoryError` for pairing errors,
    :class:`~ruflo_consensus.check.models.UnknownModelError` for an unknown model name and
    :class:`~ruflo_consensus.check.models.InvalidOperationError` for operations the model
    rejects in :meth:`~ruflo_consensus.check.models.Model.validate`.
    """
    start = time.monotonic()
    if isinstance(model, str):
        model = get_model(model)
    # The search allocates many small acyclic tuples; the cyclic collector would walk the
    # growing memo set again and again, so it is paused for the duration of the check.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(ops, model, start, timeout)
    finally:
        if gc_was_enabled:
            gc.enable()


def _check(ops: Sequence[Op], model: Model, start: float, timeout: float | None) -> CheckResult:
    deadline = None if timeout is None else start + timeout
    operations = pair_operations(ops)
    invocations = sum(1 for op in ops if op.type == "invoke")
    for op in operations:
        model.validate(op)
    parts = [part for part in model.partition(operations) if part]
    parts = [simple for simple in (model.simplify(part) for part in parts) if simple]

    verdict: bool | None = True
    failure: FailureReport | None = None
    for index, part in enumerate(parts):
        if deadline is not None and time.monotonic() > deadline:
            verdict = None
            break
        outcome = _search(model, part, model.init(), deadline)
        if outcome.linearizable is None:
            verdict = None
            break
        if not outcome.linearizable:
            verdict = False
            failure = _explain(model, part, outcome, index, len(parts))
            break
    return CheckResult(
        linearizable=verdict,
        operations=invocations,
        seconds=time.monotonic() - start,
        partitions=len(parts),
        failure=failure,
    )
