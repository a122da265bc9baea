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
linearizable iff the list can be emptied.

Models may split a history into partitions (for example by key); by P-compositionality
the history is linearizable iff every partition is.
"""

from __future__ import annotations

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

_WINDOW_CHECK_SECONDS = 2.0
"""Time budget for re-checking a failure window on its own."""


def _freeze(value: Any) -> Any:
    """Make values hashable: lists -> tuples, dicts -> frozensets of items, sets -> frozen."""
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
    best_prefix: list[int] = field(default_factory=list)
    best_state: Any = None
    blocking: int = -1


def _search(
    model: Model,
    ops: Sequence[Operation],
    init_state: Hashable,
    deadline: float | None,
) -> _Outcome:
    """Run the WGL/Lowe search over ``ops`` (one partition) from ``init_state``.

    Returns linearizable True / False / None (deadline passed). On False, also the
    deepest configuration reached: the linearised operations (local indices, in order),
    the state after them, and the operation whose return event stopped the search there.
    """
    n = len(ops)
    if n == 0:
        return _Outcome(True)
    # Events sorted by history position; info returns go after every real event, in
    # call order.
    beyond = 1 << 62
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        ret = op.ret
        events.append((ret if op.status == "ok" and ret is not None else beyond + op.call, 1, i))
    events.sort()

    m = 2 * n
    head = m
    nxt = [*range(1, m), -1, 0]  # index m is the head sentinel
    prv = [head, *range(0, m - 1), -1]
    match = [-1] * m  # call event -> its return event; -1 for return events
    evop = [0] * m  # event -> local operation index
    call_ev = [0] * n
    for e, (_, kind, i) in enumerate(events):
        evop[e] = i
        if kind == 0:
            call_ev[i] = e
        else:
            match[call_ev[i]] = e

    step = model.step
    monotonic = time.monotonic
    opl = list(ops)
    state: Any = init_state
    linearized = 0
    stack_e: list[int] = []
    stack_s: list[Any] = []
    seen: set[tuple[int, Any]] = set()
    best_depth = -1
    best_prefix: list[int] = []
    best_state: Any = init_state
    blocking = -1
    countdown = _TIME_CHECK_INTERVAL

    e = nxt[head]
    while e != -1:
        countdown -= 1
        if countdown == 0:
            countdown = _TIME_CHECK_INTERVAL
            if deadline is not None and monotonic() > deadline:
                return _Outcome(None)
        r = match[e]
        if r >= 0:
            i = evop[e]
            legal, new_state = step(state, opl[i])
            if legal:
                config = (linearized | (1 << i), new_state)
                if config not in seen:
                    seen.add(config)
                    stack_e.append(e)
                    stack_s.append(state)
                    state = new_state
                    linearized = config[0]
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
                    e = nxt[head]
                    continue
            e = nxt[e]
        else:
            # A return of an operation that is not linearised yet: backtrack.
            depth = len(stack_e)
            if depth > best_depth:
                best_depth = depth
                best_prefix = [evop[c] for c in stack_e]
                best_state = state
                blocking = evop[e]
            if not stack_e:
                return _Outcome(False, best_prefix, best_state, blocking)
            e = stack_e.pop()
            state = stack_s.pop()
            linearized ^= 1 << evop[e]
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
            e = nxt[e]
    return _Outcome(True)


def _position(op: Operation) -> str:
    return "inf" if op.status != "ok" or op.ret is None else str(op.ret + 1)


@dataclass(frozen=True, slots=True)
class FailureReport:
    """Where the search got stuck in a non-linearizable partition.

    The search tracks the *deepest* configuration it reached: a sequence ``prefix`` of
    operations that can be linearised, in that order, consistently with real time and the
    model -- there is no longer such sequence (in the search's sense: each operation is
    placed before every operation not yet placed whose return it does not follow) -- and
    ``state``, the model state after it. From there the search could not continue:
    ``blocking`` is the first not-yet-linearised operation to return, so it had to be
    linearised before any operation invoked after that return; ``window`` holds every
    not-yet-linearised operation invoked before ``blocking`` returned (``blocking``
    included), i.e. exactly the candidates the search tried next. For each,
    ``legal_from_state`` says whether the model accepts it from ``state``; a legal
    candidate led only to dead ends later.

    ``window_alone_fails`` is True when the window's operations on their own, started
    from ``state`` and keeping their real-time order, cannot be linearised -- then the
    window is a self-contained witness given that prefix; False when they can (the
    conflict also involves operations invoked later); None when that re-check ran out of
    time. The prefix is one longest prefix, not necessarily the only one; the bug may lie
    in how the history ordered operations inside it.

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
    legal_from_state: tuple[bool, ...]
    window_alone_fails: bool | None

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
            "before it returned (each tried next from that state):"
        )
        width = max(len(model.describe_op(op)) for op in self.window)
        width = max(width, len("operation"))
        lines.append(
            f"  {'op':>7}  {'process':>8}  {'operation':<{width}}  {'call':>7}  {'return':>7}"
            "  from that state"
        )
        for op, legal in zip(self.window, self.legal_from_state, strict=True):
            verdict = "legal, but every continuation failed" if legal else "illegal"
            mark = "  <- could not be linearized" if op is self.blocking else ""
            lines.append(
                f"  {'#' + str(op.index):>7}  {op.process!s:>8}  "
                f"{model.describe_op(op):<{width}}  {op.call + 1:>7}  {_position(op):>7}"
                f"  {verdict}{mark}"
            )
        if self.window_alone_fails is True:
            lines.append(
                "These window operations alone, started from that state, cannot be linearized."
            )
        elif self.window_alone_fails is False:
            lines.append(
                "These window operations alone can be linearized from that state; the "
                "conflict also involves operations invoked later."
            )
        else:
            lines.append("(Re-checking the window on its own ran out of time.)")
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
    prefix = tuple(part[i] for i in outcome.best_prefix)
    done = set(outcome.best_prefix)
    blocking = part[outcome.blocking]
    limit = blocking.ret if blocking.status == "ok" and blocking.ret is not None else None
    window = tuple(
        op
        for i, op in enumerate(part)
        if i not in done and (limit is None or op.call < limit)
    )
    state = outcome.best_state
    legal: list[bool] = []
    for op in window:
        try:
            legal.append(bool(model.step(state, op)[0]))
        except Exception:  # a user model that cannot even evaluate it: call it illegal
            legal.append(False)
    alone = _search(model, window, state, time.monotonic() + _WINDOW_CHECK_SECONDS)
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
        legal_from_state=tuple(legal),
        window_alone_fails=None if alone.linearizable is None else not alone.linearizable,
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
    deadline = None if timeout is None else start + timeout
    operations = pair_operations(ops)
    invocations = sum(1 for op in ops if op.type == "invoke")
    for op in operations:
        model.validate(op)
    operations = [op for op in operations if not (op.is_info and model.can_drop(op))]
    parts = [part for part in model.partition(operations) if part]

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
