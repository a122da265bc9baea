"""Deterministic history generators for testing and benchmarking the checker.

:func:`generate_history` simulates clients that run operations concurrently against a
plain sequential store (a dict here, independent of the checker's models). Every
operation takes effect at one instant between its invoke and its completion, so the
history it produces is linearizable by construction. :func:`mutate_history` then breaks
such a history. Both draw randomness only from ``random.Random(seed)``: the same
arguments always give the same history.

A :class:`NetworkPartition` passed to :func:`generate_history` cuts some clients off for
part of the run, as a Jepsen partition nemesis would: their operations time out
(``info``) and may take effect after the partition heals, which keeps the history
linearizable; with ``stale=True`` the cut-off clients' reads of one key are instead
answered from a stale replica, which makes that key (and only that key)
non-linearizable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruflo_consensus.check.history import Op
from ruflo_consensus.check.models import UnknownModelError

__all__ = ["NetworkPartition", "generate_history", "mutate_history"]

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
    cut: bool = False  # invoked by a cut-off client during a partition
    late: bool = False  # took effect after the partition began


@dataclass(frozen=True, slots=True)
class NetworkPartition:
    """A network partition during a generated history (see :func:`generate_history`).

    The partition begins when ``start`` (a fraction of ``n_ops``) operations have been
    invoked and heals when ``end`` have. The first ``round(minority * n_clients)``
    clients (at least one, never all) are cut off: an operation such a client invokes
    while the partition lasts cannot reach the store. It times out with ``info`` and,
    for an update, takes effect after the partition healed with probability one half
    (or never). Cut-off clients pick ``key`` for half their operations, reads mostly.

    With ``stale=False`` the history stays linearizable. With ``stale=True`` the cut-off
    clients' reads of ``key`` complete ``ok`` with the value ``key`` held when the
    partition began, as a deposed leader serving reads from its own copy would; once a
    write of ``key`` by a connected client has completed, such a read is not
    linearizable. ``key`` is an integer key of the kv model; the register model ignores
    it.
    """

    start: float = 0.3
    end: float = 0.7
    minority: float = 0.4
    key: Any = 0
    stale: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError("a partition needs 0 <= start <= end <= 1")
        if not 0.0 < self.minority < 1.0:
            raise ValueError("the minority must be a fraction strictly between 0 and 1")


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
    partition: NetworkPartition | None = None,
) -> list[Op]:
    """Generate a history of ``n_ops`` operations by ``n_clients`` clients.

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

    Without ``partition`` (or with a :class:`NetworkPartition` whose ``stale`` is false)
    every operation takes effect at one instant between its invoke and its completion
    (or never, if ``info``), so the history is linearizable by construction. With a
    stale partition it is not linearizable, and ``partition.key`` is the only key that
    breaks: should the partition produce no stale read that follows a completed write
    of that key (only likely in very short histories), a write of the key and a stale
    read are appended at the end, so the history then holds ``n_ops + 2`` invocations.
    """
    if model not in ("register", "kv"):
        raise UnknownModelError(model)
    if n_clients < 1:
        raise ValueError("n_clients must be at least 1")
    if n_keys < 1:
        raise ValueError("n_keys must be at least 1")
    if partition is not None and n_clients < 2:
        raise ValueError("a partition needs at least 2 clients")
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

    # The partition: clients 0 .. cut_clients-1 are cut off between invocation numbers
    # cut_from and cut_to. Nothing below draws randomness unless a partition is given.
    cut_clients = cut_from = cut_to = 0
    victim: Any = None
    if partition is not None:
        cut_clients = min(n_clients - 1, max(1, round(partition.minority * n_clients)))
        cut_from = int(partition.start * n_ops)
        cut_to = int(partition.end * n_ops)
        victim = partition.key if kv else None
    began = healed = False
    snapshot: Any = None  # the victim key's value when the partition began
    overwritten = False  # a connected client's write of the victim key has completed
    stale_proof = False  # a stale read was invoked after that
    held: list[_Pending] = []  # cut-off updates that may take effect after the heal

    def new_op(process: int, cut: bool) -> _Pending:
        nonlocal counter
        key = rng.randrange(n_keys) if kv else None
        roll = rng.random()
        if cut and rng.random() < 0.5:
            key = victim
            roll *= 0.5  # mostly reads
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
        op = _Pending(process, f, key, value, info=rng.random() < info_rate, cut=cut)
        if cut:
            stale = partition is not None and partition.stale
            if stale and key == victim and f in ("read", "get"):
                op.info = False
                op.applied = True  # answered at once from the stale copy
                op.result = snapshot
            else:
                op.info = True  # times out
        return op

    def complete(client: int, op: _Pending) -> None:
        nonlocal overwritten
        if op.info:
            history.append(Op(op.process, "info", op.f, op.key, op.value))
            if op.cut and op.f not in ("read", "get") and rng.random() < 0.5:
                (zombies if healed else held).append(op)
            elif op.f not in ("read", "get") and not op.applied and rng.random() < 0.5:
                zombies.append(op)  # may still take effect later
            processes[client] += n_clients
        elif op.f in ("read", "get"):
            history.append(Op(op.process, "ok", op.f, op.key, op.result))
        elif op.f == "cas" and not op.succeeded:
            history.append(Op(op.process, "fail", op.f, op.key, op.value))
        else:
            history.append(Op(op.process, "ok", op.f, op.key, op.value))
            if op.late and op.key == victim:
                overwritten = True
        inflight[client] = None
        busy.remove(client)

    def apply(op: _Pending) -> None:
        store.apply(op)
        op.late = began

    while invoked < n_ops or busy:
        if partition is not None:
            if not began and invoked >= cut_from:
                began = True
                snapshot = store.data.get(victim, store.empty)
            if began and not healed and invoked >= cut_to:
                healed = True
                zombies.extend(held)
                held.clear()
        if zombies and rng.random() < _ZOMBIE_RATE:
            apply(zombies.pop(rng.randrange(len(zombies))))
            continue
        client = rng.randrange(n_clients)
        op = inflight[client]
        if op is None:
            if invoked >= n_ops:
                client = rng.choice(busy)
                op = inflight[client]
            else:
                cut = began and not healed and client < cut_clients
                op = new_op(processes[client], cut)
                inflight[client] = op
                busy.append(client)
                invoked += 1
                history.append(Op(op.process, "invoke", op.f, op.key, op.value))
                if op.cut and op.applied and overwritten:
                    stale_proof = True
                continue
        assert op is not None
        if op.applied:
            complete(client, op)
        elif op.cut or (op.info and rng.random() < 0.5):
            complete(client, op)  # info before taking effect
        else:
            apply(op)
    if partition is not None and partition.stale and not stale_proof:
        # The partition was too short to show a stale read: add one at the end.
        counter += 1
        value = f"v{counter}" if kv else counter
        writer = processes[n_clients - 1]
        f_write, f_read = ("put", "get") if kv else ("write", "read")
        history.append(Op(writer, "invoke", f_write, victim, value))
        history.append(Op(writer, "ok", f_write, victim, value))
        history.append(Op(processes[0], "invoke", f_read, victim, None))
        history.append(Op(processes[0], "ok", f_read, victim, snapshot))
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
