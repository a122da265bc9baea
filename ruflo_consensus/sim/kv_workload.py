"""The simulated clients every backend runs, and the history they write.

A :class:`ClientSimEngine` is a :class:`~.engine.SimEngine` with clients. Each client
runs one operation at a time: it picks a command (:meth:`~ClientSimEngine.choose_command`,
by default the KV mix of :func:`kv_command`), records the invoke in the history, and
hands the command to the backend (:meth:`~ClientSimEngine.start_op`), which sends it its
own way. When the backend has an answer it calls :meth:`~ClientSimEngine.complete`; the
result becomes an ``ok``/``fail`` op for the linearizability checker
(:meth:`~ClientSimEngine.outcome`, by default :func:`kv_outcome`) and the client thinks
before its next operation. A client whose operation times out retries
(:meth:`~ClientSimEngine.retry`) until the give-up time has passed; then it records
``info`` and, like a crashed Jepsen process, continues under a new process and client
identity (:meth:`~ClientSimEngine.new_session`).

The backends differ only in those hooks: Raft follows NotLeader hints within client
sessions, PBFT waits for matching signed replies, CRDT replicas apply locally.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..check.history import Op
from ..statemachine import CommandRejected
from ..topology import Topology
from .config import SimConfig
from .engine import FIRST_BACKEND_KIND, STOP_FAULTS, SimEngine

__all__ = [
    "CLIENT_TIMEOUT",
    "NEXT_OP",
    "ClientSimEngine",
    "KVClient",
    "PendingOp",
    "info_op",
    "kv_command",
    "kv_outcome",
]

# the clients' event kinds, between the engine's and the backends' own
NEXT_OP, CLIENT_TIMEOUT = range(STOP_FAULTS + 1, STOP_FAULTS + 3)
assert CLIENT_TIMEOUT < FIRST_BACKEND_KIND


@dataclass(slots=True)
class PendingOp:
    """A client's operation in flight: its invoke, the command, and when it started."""

    op: Op
    command: dict[str, Any]
    seq: int
    started: int
    attempt: int = 0


P = TypeVar("P", bound=PendingOp)


@dataclass(slots=True)
class KVClient(Generic[P]):
    """A simulated client: its process number in the history and its session name.

    ``seq`` numbers the session's requests from 1; ``counter`` makes the values it writes
    unique; ``last_seen`` is what it last read or wrote per key (its next ``cas`` expects it).
    """

    index: int
    process: int
    name: str
    seq: int = 0
    counter: int = 0
    pending: P | None = None
    last_seen: dict[str, str] = field(default_factory=dict)


C = TypeVar("C", bound=KVClient[Any])


def kv_command(rng: random.Random, keys: int, client: KVClient[Any]) -> tuple[dict[str, Any], Op]:
    """The KV mix: 35 % ``get``, 25 % ``put``, 25 % ``append``, 15 % ``cas`` on ``keys`` keys.

    Returns the command for the state machine and its invoke for the history. Every value
    written is unique (``process.counter``); a ``cas`` expects what the client last saw.
    """
    key = f"k{rng.randrange(keys)}"
    roll = rng.random()
    client.counter += 1
    token = f"{client.process}.{client.counter}"
    command: dict[str, Any]
    if roll < 0.35:
        command = {"op": "get", "key": key}
        op = Op(client.process, "invoke", "get", key, None)
    elif roll < 0.6:
        command = {"op": "put", "key": key, "value": token}
        op = Op(client.process, "invoke", "put", key, token)
    elif roll < 0.85:
        command = {"op": "append", "key": key, "value": token + ";"}
        op = Op(client.process, "invoke", "append", key, token + ";")
    else:
        old = client.last_seen.get(key, "")
        command = {"op": "cas", "key": key, "old": old, "new": token}
        op = Op(client.process, "invoke", "cas", key, [old, token])
    return command, op


def kv_outcome(op: Op, result: Any, last_seen: dict[str, str]) -> Op:
    """The history op that completes ``op`` with ``result``; updates ``last_seen``.

    A rejected command failed; a ``cas`` that did not match failed; a ``get`` returns
    what it read; any other command is ``ok`` with the value it was invoked with.
    """
    if isinstance(result, CommandRejected):
        return Op(op.process, "fail", op.f, op.key, op.value)
    if op.f == "get":
        last_seen[op.key] = result
        return Op(op.process, "ok", "get", op.key, result)
    if op.f == "cas":
        if result is True:
            last_seen[op.key] = op.value[1]
        return Op(op.process, "ok" if result is True else "fail", "cas", op.key, op.value)
    return Op(op.process, "ok", op.f, op.key, op.value)


def info_op(op: Op) -> Op:
    """The ``info`` op for an operation whose outcome is unknown (timed out, run ended)."""
    return Op(op.process, "info", op.f, op.key, op.value)


class ClientSimEngine(SimEngine, Generic[C]):
    """A simulation engine with clients; backends fill ``clients`` and implement the hooks.

    Clients stop starting operations at ``ops_end_us`` (by default a little before the
    end, so the last ones can finish).
    """

    def __init__(self, config: SimConfig, topology: Topology | None, tick_ms: int) -> None:
        super().__init__(config, topology, tick_ms)
        self.history: list[Op] = []
        self.clients: list[C] = []
        self.ops_end_us = max(0, self.end_us - int(min(1.0, config.duration_s / 4) * 1e6))
        self.handle(NEXT_OP, lambda a, b: self._next_op(self.clients[a]))
        self.handle(CLIENT_TIMEOUT, lambda a, b: self._timed_out(a, b))

    # ------------------------------------------------------------------ hooks

    def choose_command(self, client: C) -> tuple[dict[str, Any], Op]:
        """The client's next command and its invoke (default: the KV mix)."""
        return kv_command(self.rng, self.config.keys, client)

    def start_op(self, client: C, command: dict[str, Any], op: Op) -> None:
        """Make ``client.pending`` for the command (number ``client.seq``) and send it."""
        raise NotImplementedError

    def retry(self, client: C) -> None:
        """The pending operation timed out before the give-up time: send it again."""
        raise NotImplementedError

    def outcome(self, client: C, result: Any) -> Op:
        """The history op a result completes the pending operation with (default: KV)."""
        assert client.pending is not None
        return kv_outcome(client.pending.op, result, client.last_seen)

    def trace_op(self, client: C, done: Op) -> None:
        """Record a completed (or abandoned) operation in the trace."""
        assert client.pending is not None
        self.trace(f"{client.name} {done.type} {done.f} {client.pending.seq}")

    def new_session(self, client: C) -> None:
        """Continue under a new process and client identity, as a crashed Jepsen process.

        A fresh session name, so the old session's sequence numbers cannot collide with
        the new one's, which start from 1 again.
        """
        n = len(self.clients)
        client.process += n
        client.name = f"c{client.index}g{client.process // n}"
        client.pending = None
        client.seq = 0
        client.counter = 0
        client.last_seen.clear()

    # ------------------------------------------------------------------ lifecycle

    def on_start(self) -> None:
        """Start every client within the first 10 ms."""
        for client in self.clients:
            self.push(int(self.rng.random() * 10_000), NEXT_OP, client.index)

    def _next_op(self, client: C) -> None:
        if self.now >= self.ops_end_us or client.pending is not None:
            return
        command, op = self.choose_command(client)
        client.seq += 1
        self.history.append(op)
        self.start_op(client, command, op)

    def arm_timeout(self, client: C) -> None:
        """Schedule the timeout of the pending operation's current attempt."""
        p = client.pending
        assert p is not None
        timeout = int(self.config.client_timeout_ms * 1000)
        self.push(self.now + timeout, CLIENT_TIMEOUT, client.index, (p.seq, p.attempt))

    def waiting(self, index: int, attempt_id: tuple[int, int]) -> C | None:
        """The client, if its pending operation is still at attempt ``(seq, attempt)``."""
        client = self.clients[index]
        p = client.pending
        if p is None or (p.seq, p.attempt) != attempt_id:
            return None
        return client

    def _timed_out(self, index: int, attempt_id: tuple[int, int]) -> None:
        client = self.waiting(index, attempt_id)
        if client is None:
            return
        assert client.pending is not None
        if self.now - client.pending.started >= int(self.config.client_give_up_ms * 1000):
            self.give_up(client)
            return
        self.retry(client)

    def complete(self, client: C, result: Any) -> None:
        """The pending operation has ``result``: record it, then think before the next."""
        done = self.outcome(client, result)
        self.history.append(done)
        self.trace_op(client, done)
        client.pending = None
        think = int(self.rng.random() * self.config.think_ms * 1000)
        self.push(self.now + think, NEXT_OP, client.index)

    def give_up(self, client: C) -> None:
        """Record ``info`` for the pending operation and go on in a new session."""
        assert client.pending is not None
        info = info_op(client.pending.op)
        self.history.append(info)
        self.trace_op(client, info)
        self.new_session(client)
        self.push(self.now + 1000, NEXT_OP, client.index)

    def close_history(self) -> None:
        """At the end of the run: ``info`` for every operation still in flight."""
        for client in self.clients:
            if client.pending is not None:
                self.history.append(info_op(client.pending.op))
