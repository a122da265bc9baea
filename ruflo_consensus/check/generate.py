"""Deterministic history generators for testing and benchmarking the checker.

:func:`generate_history` simulates clients that run operations concurrently against a
plain sequential store (a dict here, independent of the checker's models). Every
operation takes effect at one instant between its invoke and its completion, so the
history it produces is linearizable by construction. :func:`mutate_history` then breaks
such a history. Both draw randomness only from ``random.Random(seed)``: the same
arguments always give the same history.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruflo_consensus.check.history import Op
from ruflo_consensus.check.models import UnknownModelError

__all__ = ["generate_history", "mutate_history"]

_ZOMBIE_RATE = 0.05
"""Per simulation step, the chance that a lingering ``info`` operation takes effect."""


@dataclass(slots=True)
class _Pending:
    """An operation a simulated client has invoked."""

    process: int
    f: str
    key: Any
    value: Any
    info: bool
    applied: bool = False
    result: Any = None
    succeeded: bool = True


class _Store:
    """The sequential reference store: a dict, ``None`` for unwritten keys.

    Reads of an unwritten key return ``None`` for the register and ``""`` for kv.
    """

    def __init__(self, empty: Any) -> None:
        self.data: dict[Any, Any] = {}
        self.empty = empty

    def apply(self, op: _Pending) -> None:
        current = self.data.get(op.key, self.empty)
        if op.f in ("read", "get"):
            op.result = current
        elif op.f in ("write", "put"):
            self.data[op.key] = op.value
            op.result = op.value
        elif op.f == "append":
            self.data[op.key] = current + op.value
            op.result = op.value
        else:  # cas
            old, new = op.value
            if current == old:
                self.data[op.key] = new
                op.succeeded = True
            else:
                op.succeeded = False
            op.result = op.value
        op.applied = True


def generate_history(
    model: str,
    n_ops: int,
    n_clients: int,
    seed: int,
    n_keys: int = 8,
    info_rate: float = 0.0,
) -> list[Op]:
    """Generate a linearizable history of ``n_ops`` operations by ``n_clients`` clients.

    ``model`` is ``"register"`` (read / write / cas of integers on one register; ``n_keys``
    is ignored and ``key`` is ``None``) or ``"kv"`` (get / put / append / cas of strings on
    integer keys ``0 .. n_keys-1``). Each simulation step picks a random client: an idle
    client invokes its next operation, a client with an operation in flight makes it take
    effect on the store, then (at a later step) completes it -- ``ok``, or ``fail`` for a
    ``cas`` whose expected value did not match. Written values are unique.

    With ``info_rate > 0`` that fraction of operations completes with ``info``: such an
    operation may have taken effect before its completion, may never take effect, or may
    take effect at some later step (while other clients keep running); the client then
    continues under a fresh process id (``process + n_clients``), as Jepsen does. Every
    invocation in the returned list has a completion.
    """
    if model not in ("register", "kv"):
        raise UnknownModelError(model)
    if n_clients < 1:
        raise ValueError("n_clients must be at least 1")
    if n_keys < 1:
        raise ValueError("n_keys must be at least 1")
    rng = random.Random(seed)
    kv = model == "kv"
    store = _Store("" if kv else None)
    history: list[Op] = []
    processes = list(range(n_clients))
    inflight: list[_Pending | None] = [None] * n_clients
    busy: list[int] = []  # clients with an operation in flight
    zombies: list[_Pending] = []
    invoked = 0
    counter = 0
    written: list[Any] = []

    def new_op(process: int) -> _Pending:
        nonlocal counter
        key = rng.randrange(n_keys) if kv else None
        roll = rng.random()
        counter += 1
        value: Any
        if kv:
            if roll < 0.4:
                f, value = "get", None
            elif roll < 0.65:
                f, value = "put", f"v{counter}"
            elif roll < 0.85:
                f, value = "append", f"a{counter}."
            else:
                current = store.data.get(key, "")
                old = current if rng.random() < 0.6 or not written else rng.choice(written)
                f, value = "cas", (old, f"v{counter}")
        elif roll < 0.4:
            f, value = "read", None
        elif roll < 0.75:
            f, value = "write", counter
        else:
            current = store.data.get(None)
            old = current if rng.random() < 0.6 or not written else rng.choice(written)
            f, value = "cas", (old, counter)
        if f in ("put", "write"):
            written.append(value)
        elif f == "cas":
            written.append(value[1])
        return _Pending(process, f, key, value, info=rng.random() < info_rate)

    def complete(client: int, op: _Pending) -> None:
        if op.info:
            history.append(Op(op.process, "info", op.f, op.key, op.value))
            if op.f not in ("read", "get") and not op.applied and rng.random() < 0.5:
                zombies.append(op)  # may still take effect later
            processes[client] += n_clients
        elif op.f in ("read", "get"):
            history.append(Op(op.process, "ok", op.f, op.key, op.result))
        elif op.f == "cas" and not op.succeeded:
            history.append(Op(op.process, "fail", op.f, op.key, op.value))
        else:
            history.append(Op(op.process, "ok", op.f, op.key, op.value))
        inflight[client] = None
        busy.remove(client)

    while invoked < n_ops or busy:
        if zombies and rng.random() < _ZOMBIE_RATE:
            store.apply(zombies.pop(rng.randrange(len(zombies))))
            continue
        client = rng.randrange(n_clients)
        op = inflight[client]
        if op is None:
            if invoked >= n_ops:
                client = rng.choice(busy)
                op = inflight[client]
            else:
                op = new_op(processes[client])
                inflight[client] = op
                busy.append(client)
                invoked += 1
                history.append(Op(op.process, "invoke", op.f, op.key, op.value))
                continue
        assert op is not None
        if op.applied:
            complete(client, op)
        elif op.info and rng.random() < 0.5:
            complete(client, op)  # info before taking effect
        else:
            store.apply(op)
    return history


def _chars(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        into.update(value)
    elif isinstance(value, tuple | list | set | frozenset):
        for v in value:
            _chars(v, into)
    elif isinstance(value, dict):
        for k, v in value.items():
            _chars(k, into)
            _chars(v, into)


def _sentinel(rng: random.Random, ops: Sequence[Op]) -> str:
    """A string containing a character that occurs in no string value of ``ops``.

    Hence no write, cas or concatenation of appends in ``ops`` can produce it.
    """
    used: set[str] = set()
    for op in ops:
        _chars(op.value, used)
    marker = next(chr(c) for c in range(0x2400, 0x10FFFF) if chr(c) not in used)
    return f"never-written-{rng.getrandbits(32):08x}{marker}"


def mutate_history(ops: Sequence[Op], seed: int, kind: str = "never-written") -> list[Op]:
    """Return a copy of ``ops`` that is not linearizable under ``"register"`` / ``"kv"``.

    ``kind="never-written"`` (default): one ``ok`` read/get completion, chosen with
    ``random.Random(seed)``, gets a fresh string value that contains a character found in
    no value of the history, so no write, cas or sequence of appends can produce it; a
    history without an ``ok`` read gets a new read of such a value appended at the end
    (new process). That read can never be linearised, so the result is
    non-linearizable for the register and kv models, whatever the input.

    ``kind="stale"``: one ``ok`` read is changed to return an *older* value ``w`` such that
    ``w`` was written by exactly one operation, that write completed before another
    write of the same key began, and that other write completed before the read was
    invoked. For histories from :func:`generate_history` (unique values) this is never
    linearizable; for arbitrary histories it is "very likely" only, so check the result
    (the test suite cross-checks small cases with a brute-force checker). If no read
    qualifies, falls back to ``"never-written"``.
    """
    if kind not in ("never-written", "stale"):
        raise ValueError(f"unknown mutation kind {kind!r}")
    rng = random.Random(seed)
    out = list(ops)
    # pair invokes with completions
    pending: dict[int | str, int] = {}
    pairs: list[tuple[int, int]] = []
    for pos, op in enumerate(out):
        if op.type == "invoke":
            pending[op.process] = pos
        elif op.process in pending:
            pairs.append((pending.pop(op.process), pos))
    reads = [
        (call, ret)
        for call, ret in pairs
        if out[ret].type == "ok" and out[ret].f in ("read", "get")
    ]
    if kind == "stale":
        candidates: list[tuple[int, Any]] = []
        writes = [
            (call, ret)
            for call, ret in pairs
            if out[ret].type == "ok" and out[ret].f in ("write", "put")
        ]
        write_counts: dict[Any, int] = {}
        for op in out:
            if op.type != "invoke":
                continue
            written_value = None
            if op.f in ("write", "put"):
                written_value = op.value
            elif op.f == "cas" and isinstance(op.value, tuple | list) and len(op.value) == 2:
                written_value = op.value[1]
            try:
                write_counts[(op.key, written_value)] = (
                    write_counts.get((op.key, written_value), 0) + 1
                )
            except TypeError:
                continue
        for r_call, r_ret in reads:
            key = out[r_call].key
            observed = out[r_ret].value
            for w_call, w_ret in writes:
                value = out[w_call].value
                if out[w_call].key != key or value == observed or w_ret > r_call:
                    continue
                try:
                    if write_counts.get((key, value)) != 1:
                        continue
                except TypeError:
                    continue
                overwritten = any(
                    out[x_call].key == key
                    and out[x_call].value != value
                    and x_call > w_ret
                    and x_ret < r_call
                    for x_call, x_ret in writes
                )
                if overwritten:
                    candidates.append((r_ret, value))
                    break
        if candidates:
            pos, value = candidates[rng.randrange(len(candidates))]
            old = out[pos]
            out[pos] = Op(old.process, old.type, old.f, old.key, value, old.time)
            return out
    bogus = _sentinel(rng, out)
    if reads:
        _, pos = reads[rng.randrange(len(reads))]
        old = out[pos]
        out[pos] = Op(old.process, old.type, old.f, old.key, bogus, old.time)
        return out
    kv = any(op.f in ("get", "put", "append") for op in out)
    keys = [op.key for op in out if op.key is not None]
    key = rng.choice(keys) if keys else (0 if kv else None)
    f = "get" if kv else "read"
    procs = [op.process for op in out if isinstance(op.process, int)]
    process = max(procs, default=-1) + 1
    out.append(Op(process, "invoke", f, key, None))
    out.append(Op(process, "ok", f, key, bogus))
    return out
