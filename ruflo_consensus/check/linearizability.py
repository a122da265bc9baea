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
candidate). Every configuration that failed (linearised ``ok`` operations as an int
bitset, interned model state, linearised ``info`` operations as another bitset) is
memoised, so the same configuration -- or one with more ``info`` operations used -- is
never explored twice. The history is linearizable iff every ``ok`` operation can be
linearised this way; ``info`` operations still unplaced at that point are taken not to
have happened. See :func:`_search` for the pruning and :func:`check_history` for how the
partitions are searched in turns under a memo budget (the answer is unknown, never a
guess, when it is exhausted).

Models may split a history into partitions (for example by key); by P-compositionality
the history is linearizable iff every partition is.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruflo_consensus.check.history import Op, validate_pairing
from ruflo_consensus.check.models import Model, Operation, get_model

__all__ = [
    "DEFAULT_MEMO_BUDGET",
    "CheckProgress",
    "CheckResult",
    "FailureReport",
    "ProgressCallback",
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


@dataclass(frozen=True, slots=True)
class CheckProgress:
    """What :func:`check_history` reports to its ``progress`` callback.

    ``keys_done`` of ``keys_total`` partitions are decided; ``key`` is the partition being
    searched (``None`` between partitions or for an unkeyed one), ``operations`` its
    operation count, and ``configurations`` the search configurations recorded so far
    over the whole check (the memo entries of the current partition count towards the
    ``memo_budget``).
    """

    keys_done: int
    keys_total: int
    key: Any
    operations: int
    configurations: int
    seconds: float


ProgressCallback = Callable[[CheckProgress], None]


@dataclass(slots=True)
class _Outcome:
    """Internal result of searching one partition."""

    linearizable: bool | None
    best_prefix: list[Operation] = field(default_factory=list)
    best_state: Any = None
    blocking: Operation | None = None
    configurations: int = 0
    reason: str | None = None  # why undecided: "timeout", "memo budget" or "no witness"


def _search(
    model: Model,
    ops: Sequence[Operation],
    init_state: Hashable,
    deadline: float | None,
    budget: int | None = None,
    exact: bool = False,
    tick: Callable[[int], None] | None = None,
    witness_horizon: int | None = None,
) -> _Outcome:
    """Run the WGL/Lowe search over ``ops`` (one partition) from ``init_state``.

    Returns linearizable True / False / None (deadline passed or more than ``budget``
    configurations memoised). On False, also the deepest configuration reached: the
    linearised operations in order, the state after them, and the operation whose return
    event stopped the search there.

    A configuration is (the linearised ``ok`` operations, the linearised ``info``
    operations, the model state). The ``ok`` set is kept as ``(low, bits)``: ``ok``
    operations are numbered in call order, the first ``low`` of them are all linearised,
    and ``bits`` holds the rest shifted down by ``low``; the ``info`` set is a bitset over
    the ``info`` operations; states are interned to small ints. A configuration is
    memoised once it has been searched without success, as one int key ``(bits, low,
    state id)`` mapping to the ``info`` sets found failing with it.

    Pruning, besides the memo:

    * Candidates are the calls before the first ``ok`` return still pending (an operation
      is linearised only if it is minimal in the remaining history). ``info`` operations
      return at +infinity, never block anything, and are tried after the ``ok``
      candidates: a failing configuration is found with few ``info`` operations first.
    * Dominance (unless ``exact``): leaving an ``info`` operation out only keeps options
      open, so a configuration whose ``ok`` set and state match a failed one whose
      ``info`` set is a subset of its own fails too.
    * Unless ``exact``: right after an ``info`` operation ``i``, an ``info`` operation
      ``j`` that gives the same state with or without ``i`` before it is skipped (the
      parent configuration tries ``j`` alone, with a smaller ``info`` set).
    * A legal read-only ``ok`` operation is committed to (see :meth:`Model.read_only`).
    * Unless ``exact``: an ``info`` operation is no longer tried once every ``ok``
      operation that may observe it (:meth:`Model.observers`) is linearised.

    ``exact`` keeps the memo to exact matches, so the deepest configuration is a longest
    linearizable prefix (used for failure reports); the verdict is the same either way.

    ``witness_horizon`` makes it a *witness search*, which may only answer True (with a
    valid linearization: every step taken is legal and respects real time) or give up
    (None, "no witness"): an ``info`` operation is tried only when an ``ok`` operation
    that may observe it is among the candidates or the next ``witness_horizon`` ``ok``
    operations invoked. A timed-out write that takes effect long after it was invoked is
    then placed near where it was observed instead of everywhere in between; when it
    finds nothing, the full search decides.
    """
    opl = sorted(ops, key=lambda op: op.call)
    oks = [op for op in opl if op.status == "ok"]
    infos = [op for op in opl if op.status != "ok"]
    n = len(oks)
    if n == 0:
        return _Outcome(True)
    k = len(infos)
    info_call = [op.call for op in infos]
    ok_call = [op.call for op in oks]
    # watchers[j]: bitset (over ok operation numbers) of the ok operations that may see
    # info operation j; -1 when any may. Once all are linearised, j is not tried.
    watchers = [-1] * k
    if witness_horizon is not None and (exact or not k):
        return _Outcome(None, reason="no witness")
    if not exact and k:
        number = {op.index: i for i, op in enumerate(oks)}
        part = list(opl)
        for j, op in enumerate(infos):
            seen_by = model.observers(part, op)
            if seen_by is not None:
                watchers[j] = sum(1 << number[w.index] for w in seen_by if w.index in number)
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(oks):
        assert op.ret is not None
        events.append((op.call, 0, i))
        events.append((op.ret, 1, i))
    events.sort()

    m = 2 * n
    head = m
    nxt = [*range(1, m), -1, 0]  # index m is the head sentinel
    prv = [head, *range(0, m - 1), -1]
    match = [-1] * m  # call event -> its return event; -1 for return events
    evop = [0] * m  # event -> ok operation number
    evpos = [0] * m  # event -> history position
    call_ev = [0] * n
    for e, (pos, kind, i) in enumerate(events):
        evop[e] = i
        evpos[e] = pos
        if kind == 0:
            call_ev[i] = e
        else:
            match[call_ev[i]] = e

    step = model.step
    monotonic = time.monotonic
    pure = [model.read_only(op) for op in oks]
    intern: dict[Any, int] = {init_state: 0}
    memo: dict[int, Any] = {}  # key -> info set (int) or list of info sets
    extra = 0  # memo info sets beyond the first per key
    limit_configs = budget if budget is not None else -1
    state: Any = init_state
    sid = 0
    low = 0
    bits = 0
    info_set = 0
    remaining = n
    # One frame per linearised operation: how the configuration was left (ok call event
    # e >= 0, or ~j for info operation j), the parent configuration, the parent's
    # first-return limit, and whether the parent committed to this child.
    stack: list[tuple[int, Any, int, int, int, int, int, bool]] = []
    best_depth = -1
    best_moves: list[int] = []
    best_state: Any = init_state
    blocking = -1
    low_water = 0  # stack entries below this are unchanged since best_moves was taken
    countdown = _TIME_CHECK_INTERVAL

    def key_of(lo: int, bi: int, s: int) -> int:
        return (((bi << 32) | lo) << 32) | s

    def dominated(key: int, inf: int) -> bool:
        seen = memo.get(key)
        if seen is None:
            return False
        if exact:
            return inf == seen if type(seen) is int else inf in seen
        if type(seen) is int:
            return seen & ~inf == 0
        return any(s & ~inf == 0 for s in seen)

    # Scan position in the current configuration: ok list event e (phase 0) or info
    # index j (phase 1); limit is the history position of the first pending ok return.
    e = nxt[head]
    j = 0
    limit = 0
    phase = 0
    while True:
        countdown -= 1
        if countdown == 0:
            countdown = _TIME_CHECK_INTERVAL
            if deadline is not None and monotonic() > deadline:
                return _Outcome(None, configurations=len(memo) + extra, reason="timeout")
            if tick is not None:
                tick(len(memo) + extra)
        child = False
        commit = False
        if phase == 0:
            r = match[e]
            if r < 0:
                # the first pending ok return: ok candidates are exhausted
                limit = evpos[e]
                phase = 1
                j = 0
                continue
            i = evop[e]
            legal, new_state = step(state, oks[i])
            if legal:
                bit = i - low
                if bit:
                    new_low = low
                    new_bits = bits | (1 << bit)
                else:
                    new_bits = bits | 1
                    ones = (~new_bits & (new_bits + 1)).bit_length() - 1
                    new_low = low + ones
                    new_bits >>= ones
                new_sid = intern.get(new_state)
                if new_sid is None:
                    new_sid = intern[new_state] = len(intern)
                if not dominated(key_of(new_low, new_bits, new_sid), info_set):
                    child = True
                    commit = pure[i]
                    stack.append((e, state, sid, low, bits, info_set, limit, commit))
                    state, sid, low, bits = new_state, new_sid, new_low, new_bits
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
                    remaining -= 1
                    if remaining == 0:
                        return _Outcome(True, configurations=len(memo) + extra)
                elif pure[i]:
                    # committing to a legal read-only op whose successor already failed
                    phase = 2
            if not child and phase == 0:
                e = nxt[e]
                continue
        if phase == 1:
            parent_state: Any = None
            after_info = not exact and stack and stack[-1][0] < 0
            if after_info:
                parent_state = stack[-1][1]
            window = -1
            if witness_horizon is not None:
                window = (1 << (bisect_left(ok_call, limit) + witness_horizon)) - 1
            while j < k and info_call[j] < limit:
                if info_set >> j & 1 or ((watchers[j] & window) >> low) & ~bits == 0:
                    j += 1
                    continue
                legal, new_state = step(state, infos[j])
                if legal and after_info:
                    also, alone = step(parent_state, infos[j])
                    if also and alone == new_state:
                        legal = False
                if legal:
                    new_sid = intern.get(new_state)
                    if new_sid is None:
                        new_sid = intern[new_state] = len(intern)
                    new_info = info_set | (1 << j)
                    if not dominated(key_of(low, bits, new_sid), new_info):
                        child = True
                        stack.append((~j, state, sid, low, bits, info_set, limit, False))
                        state, sid, info_set = new_state, new_sid, new_info
                        break
                j += 1
        if child:
            e = nxt[head]
            phase = 0
            continue
        # This configuration failed: remember it, note the deepest one, backtrack.
        depth = len(stack)
        if depth > best_depth:
            best_depth = depth
            del best_moves[low_water:]
            best_moves.extend(entry[0] for entry in stack[low_water:])
            low_water = depth
            best_state = state
            f = nxt[head]
            while match[f] >= 0:
                f = nxt[f]
            blocking = evop[f]
        while True:
            key = key_of(low, bits, sid)
            seen = memo.get(key)
            if seen is None:
                memo[key] = info_set
            else:
                kept = [
                    s for s in (seen if type(seen) is list else [seen]) if exact or info_set & ~s
                ]
                extra += len(kept) - (0 if type(seen) is int else len(seen) - 1)
                kept.append(info_set)
                memo[key] = kept if len(kept) > 1 else info_set
            if 0 <= limit_configs < len(memo) + extra + len(intern):
                return _Outcome(
                    None,
                    [oks[evop[mv]] if mv >= 0 else infos[~mv] for mv in best_moves],
                    best_state,
                    oks[blocking] if blocking >= 0 else None,
                    configurations=len(memo) + extra,
                    reason="memo budget",
                )
            if not stack:
                if witness_horizon is not None:
                    return _Outcome(None, configurations=len(memo) + extra, reason="no witness")
                moves = best_moves
                return _Outcome(
                    False,
                    [oks[evop[mv]] if mv >= 0 else infos[~mv] for mv in moves],
                    best_state,
                    oks[blocking],
                    configurations=len(memo) + extra,
                )
            move, state, sid, low, bits, info_set, limit, committed = stack.pop()
            if len(stack) < low_water:
                low_water = len(stack)
            if move >= 0:
                remaining += 1
                # unlift: put the return back, then the call
                e = move
                r = match[e]
                p = prv[r]
                q = nxt[r]
                nxt[p] = r
                if q != -1:
                    prv[q] = r
                p = prv[e]
                nxt[p] = e
                prv[nxt[e]] = e
                if committed:
                    continue
                e = nxt[e]
                phase = 0
            else:
                j = ~move + 1
                phase = 1
            break


def _position(op: Operation) -> str:
    return "inf" if op.status != "ok" or op.ret is None else str(op.ret + 1)


@dataclass(frozen=True, slots=True)
class FailureReport:
    """Where the search got stuck in a non-linearizable partition.

    The search tracks the *deepest* configuration it reached: a sequence ``prefix`` of
    operations that is a legal sequential execution of the model and respects real time
    (if an operation in it was invoked after some operation returned, that operation is
    in it too, earlier), and ``state``, the model state after it. When ``longest`` is true
    (an exact search of the partition fitted its budget) no longer such prefix exists
    among the partition's operations (after
    :meth:`~ruflo_consensus.check.models.Model.simplify`); otherwise the prefix is
    maximal: no operation that could come next is legal from ``state``.

    ``blocking`` is the first operation not in the prefix to return: it has to be
    linearised before any operation invoked after that return. ``window`` holds every
    operation not in the prefix that was invoked before ``blocking`` returned
    (``blocking`` included) -- exactly the operations that could come next. **None of
    them is legal from** ``state``: had one been, the prefix could be extended, and it
    is a longest (or at least maximal) one. So, given that prefix, the window is a
    self-contained witness: whichever of its operations is placed next, the model
    rejects it.

    The prefix is one such prefix, not necessarily the only one, and not necessarily
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
    longest: bool = True

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

    ``linearizable`` is True, False, or None (unknown) when the check stopped before
    every partition was decided and none was found non-linearizable: the timeout
    expired, or a partition needed more than ``memo_budget`` memoised configurations.
    ``operations`` counts the invocations in the history (ok, fail, info and
    never-completed ones), ``seconds`` is the wall-clock time of the whole check,
    ``partitions`` the number of non-empty partitions the model produced, and ``failure``
    explains the non-linearizable partition found. ``reason`` says in one line why the
    verdict is False (which key, which operation) or None (timeout or memo budget, and
    on which key); it is None for True. ``configurations`` is the largest memo any one
    partition's search needed.
    """

    linearizable: bool | None
    operations: int
    seconds: float
    partitions: int
    failure: FailureReport | None = None
    reason: str | None = None
    configurations: int = 0


DEFAULT_MEMO_BUDGET = 1_000_000
"""Memoised configurations (plus interned states) one partition's search may keep.

Measured at about 200 bytes each (a dict entry with an int key, and the interned state),
so the default keeps one search near 200 MB."""

_FIRST_TURN_BUDGET = 4
"""A partition's first-turn memo budget, per operation; it grows fourfold per turn."""

_WITNESS_HORIZONS = (5,)
"""The witness searches tried in each turn: how many ok operations past the candidates
each looks for an observer of an info operation before placing it."""

_REPORT_BUDGET = 200_000
"""The memo budget of the exact search that makes a failure report's prefix longest."""


def _partition_key(part: Sequence[Operation]) -> Any:
    first = part[0].key
    return first if all(op.key == first for op in part) else None


def _where(key: Any, index: int, partitions: int) -> str:
    if key is not None:
        return f"key {key!r}"
    return f"partition {index + 1} of {partitions}"


def _extend(
    model: Model, part: Sequence[Operation], outcome: _Outcome
) -> tuple[list[Operation], Any, Operation]:
    """Extend a failing search's deepest prefix greedily until no window op is legal.

    Used when the exact report search ran out of budget: the dominance pruning may have
    cut the deepest configuration short of a longest prefix; after this, at least no
    operation that could come next is legal from the state (the window claim holds).
    """
    prefix = list(outcome.best_prefix)
    state = outcome.best_state
    placed = {op.index for op in prefix}
    ordered = sorted(part, key=lambda op: op.call)
    while True:
        pending_ok = [op for op in ordered if op.status == "ok" and op.index not in placed]
        first_ret = min(op.ret for op in pending_ok if op.ret is not None)
        for op in ordered:
            if op.index in placed or op.call >= first_ret:
                continue
            legal, new_state = model.step(state, op)
            if legal:
                prefix.append(op)
                placed.add(op.index)
                state = new_state
                break
        else:
            blocking = next(op for op in pending_ok if op.ret == first_ret)
            return prefix, state, blocking


def _explain(
    model: Model,
    part: list[Operation],
    outcome: _Outcome,
    index: int,
    partitions: int,
    deadline: float | None,
) -> FailureReport:
    exact = _search(model, part, model.init(), deadline, _REPORT_BUDGET, exact=True)
    longest = exact.linearizable is False
    if longest:
        prefix_list, state, blocking = exact.best_prefix, exact.best_state, exact.blocking
        assert blocking is not None
    else:
        prefix_list, state, blocking = _extend(model, part, outcome)
    prefix = tuple(prefix_list)
    done = {op.index for op in prefix}
    limit = blocking.ret if blocking.status == "ok" and blocking.ret is not None else None
    window = tuple(
        op
        for op in sorted(part, key=lambda op: op.call)
        if op.index not in done and (limit is None or op.call < limit)
    )
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
        longest=longest,
    )


def check_history(
    ops: Sequence[Op],
    model: Model | str,
    timeout: float | None = None,
    memo_budget: int | None = DEFAULT_MEMO_BUDGET,
    progress: ProgressCallback | None = None,
) -> CheckResult:
    """Decide whether ``ops`` (a history in real-time order) is linearizable under ``model``.

    ``model`` is a :class:`~ruflo_consensus.check.models.Model` or a registered name
    (``"register"``, ``"kv"``, ...). The model's partitions (keys, for ``"kv"``) are
    searched in turns, cheapest first (fewest ``info`` operations, then fewest
    operations): in each turn every undecided partition is searched with a memo budget
    that starts at 4 configurations per operation of the partition and grows fourfold
    per turn up to ``memo_budget`` (``None``: unbounded), so a partition that is quick to decide is
    decided early even behind expensive ones. The check stops at the first partition
    found non-linearizable (``reason`` names it and the operation that failed).

    The result is ``linearizable=None`` (unknown, with a ``reason``) when ``timeout``
    (wall-clock seconds, :func:`time.monotonic`) expires or a partition needs more than
    ``memo_budget`` configurations before one is found non-linearizable -- never a
    guess. ``progress``, if given, is called with a :class:`CheckProgress` after each
    partition and every few thousand search steps.

    Raises :class:`~ruflo_consensus.check.history.HistoryError` for pairing errors,
    :class:`~ruflo_consensus.check.models.UnknownModelError` for an unknown model name,
    :class:`~ruflo_consensus.check.models.InvalidOperationError` for operations the model
    rejects in :meth:`~ruflo_consensus.check.models.Model.validate`, and
    :class:`ValueError` for a negative ``memo_budget``.
    """
    start = time.monotonic()
    if memo_budget is not None and memo_budget < 0:
        raise ValueError(f"memo_budget must be non-negative, got {memo_budget}")
    if isinstance(model, str):
        model = get_model(model)
    # The search allocates many small acyclic objects; the cyclic collector would walk the
    # growing memo again and again, so it is paused for the duration of the check.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(ops, model, start, timeout, memo_budget, progress)
    finally:
        if gc_was_enabled:
            gc.enable()


def _check(
    ops: Sequence[Op],
    model: Model,
    start: float,
    timeout: float | None,
    budget: int | None,
    progress: ProgressCallback | None,
) -> CheckResult:
    deadline = None if timeout is None else start + timeout
    operations = pair_operations(ops)
    invocations = sum(1 for op in ops if op.type == "invoke")
    for op in operations:
        model.validate(op)
    parts = [part for part in model.partition(operations) if part]
    parts = [simple for simple in (model.simplify(part) for part in parts) if simple]
    total = len(parts)
    # Cheapest first: fewer info operations (each can double the search), then fewer ops.
    order = sorted(
        range(total), key=lambda x: (sum(op.is_info for op in parts[x]), len(parts[x]), x)
    )
    keys = [_partition_key(part) for part in parts]
    done = 0
    most = 0

    def report(key: Any, size: int, configurations: int) -> None:
        if progress is not None:
            progress(
                CheckProgress(done, total, key, size, configurations, time.monotonic() - start)
            )

    def result(verdict: bool | None, reason: str | None, failure: Any = None) -> CheckResult:
        return CheckResult(
            linearizable=verdict,
            operations=invocations,
            seconds=time.monotonic() - start,
            partitions=total,
            failure=failure,
            reason=reason,
            configurations=most,
        )

    # Turns: every undecided partition, cheapest first, gets a memo budget that grows
    # fourfold per turn up to ``budget``; a partition that exhausts the full budget makes
    # the verdict unknown.
    undecided = order
    growth = 1
    report(None, 0, 0)
    while undecided:
        left: list[int] = []
        for index in undecided:
            part = parts[index]
            turn_budget = _FIRST_TURN_BUDGET * max(1, len(part)) * growth
            final = budget is not None and turn_budget >= budget
            this_turn: int | None = budget if final else turn_budget
            if deadline is not None and time.monotonic() > deadline:
                return result(None, f"timeout after {timeout} s, {done} of {total} decided")
            where = _where(keys[index], index, total)

            def tick(configurations: int, key: Any = keys[index], size: int = len(part)) -> None:
                report(key, size, configurations)

            hook = tick if progress else None
            for horizon in _WITNESS_HORIZONS:
                outcome = _search(
                    model,
                    part,
                    model.init(),
                    deadline,
                    this_turn,
                    tick=hook,
                    witness_horizon=horizon,
                )
                if outcome.linearizable is not None or outcome.reason == "timeout":
                    break
            if outcome.linearizable is None and outcome.reason != "timeout":
                # The full search gets the whole turn when the witness search found none
                # or this is the last turn, else a quarter (the witness may need more).
                full = this_turn
                if outcome.reason == "memo budget" and not final and full is not None:
                    full //= 4
                outcome = _search(model, part, model.init(), deadline, full, tick=hook)
            most = max(most, outcome.configurations)
            if outcome.linearizable is None:
                if outcome.reason == "timeout":
                    return result(
                        None,
                        f"timeout after {timeout} s while searching {where} "
                        f"({len(part)} operations); {done} of {total} decided",
                    )
                if not final:
                    left.append(index)
                    continue
                return result(
                    None,
                    f"memo budget of {this_turn or 0:,} configurations exhausted on {where} "
                    f"({len(part)} operations); {done} of {total} decided",
                )
            done += 1
            report(None, 0, outcome.configurations)
            if outcome.linearizable is False:
                failure = _explain(model, part, outcome, index, total, deadline)
                reason = (
                    f"{where}: {model.describe_op(failure.blocking)} "
                    f"(op #{failure.blocking.index}, process {failure.blocking.process!r}) "
                    f"cannot be linearized after {len(failure.prefix)} operations"
                )
                return result(False, reason, failure)
        undecided = left
        growth *= 4
    return result(True, None)
