"""The replicated state machine contract and the reference machines.

A backend replicates *commands* to a user-supplied :class:`StateMachine`. Commands and
results are plain msgpack-able values (``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, lists and string-keyed dicts), so they cross the wire and the simulator unchanged.

``apply`` must be deterministic and do no I/O: every replica applies the same commands in
the same order and must reach byte-identical snapshots. A command that is invalid is
rejected by raising :class:`CommandError` *before* any state changes; the error becomes the
command's result on every replica, so rejection is itself deterministic.

Exactly-once application of retried client commands is handled by :class:`SessionTable`,
which sits between a consensus core's committed entries and the user machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import msgpack

__all__ = [
    "Command",
    "CommandError",
    "CommandRejected",
    "KVStateMachine",
    "RegisterStateMachine",
    "Result",
    "SessionTable",
    "StateMachine",
    "decode_result",
    "encode_result",
    "pack",
    "require_op",
    "require_str",
]

Command = Any
"""A msgpack-able command value, e.g. ``{"op": "put", "key": "a", "value": "1"}``."""

Result = Any
"""A msgpack-able result value."""


class CommandError(ValueError):
    """A command was rejected by a state machine; the state is unchanged.

    ``code`` is a short machine-readable reason (``"UNKNOWN_OP"``, ``"BAD_ARGUMENT"``, …).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """The replicated result of a command that a state machine rejected.

    Every replica records the same rejection for the same log position, so a client sees
    the same answer whichever replica replies.
    """

    code: str
    message: str


@runtime_checkable
class StateMachine(Protocol):
    """What a backend replicates commands into. Deterministic and free of I/O."""

    def apply(self, command: Command) -> Result:
        """Apply one command and return its result; raise :class:`CommandError` to reject."""
        ...

    def snapshot(self) -> bytes:
        """Serialise the whole state; equal states give equal bytes."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with one produced by :meth:`snapshot`."""
        ...


def pack(obj: Any) -> bytes:
    """Plain msgpack bytes of ``obj`` (binary-safe; not the canonical form of
    :mod:`ruflo_consensus.canonical`: map order is the writer's). Raises ``TypeError``
    or ``ValueError`` for what msgpack cannot carry."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_result(result: Result) -> list[Any]:
    """A command's result as it crosses the wire (client replies, forwards, PBFT replies).

    ``["ok", value]`` for a value, ``["rejected", code, message]`` for a
    :class:`CommandRejected`: one shape for every backend and driver.
    """
    if isinstance(result, CommandRejected):
        return ["rejected", result.code, result.message]
    return ["ok", result]


def decode_result(raw: Any) -> Result:
    """Inverse of :func:`encode_result`; raise ``ValueError`` on any other shape."""
    if isinstance(raw, list) and len(raw) == 2 and raw[0] == "ok":
        return raw[1]
    if (
        isinstance(raw, list)
        and len(raw) == 3
        and raw[0] == "rejected"
        and isinstance(raw[1], str)
        and isinstance(raw[2], str)
    ):
        return CommandRejected(raw[1], raw[2])
    raise ValueError("a result is ['ok', value] or ['rejected', code, message]")


def _unpack(data: bytes) -> Any:
    """Decode a snapshot; anything that is not one msgpack value is BAD_SNAPSHOT."""
    if not isinstance(data, bytes | bytearray):
        raise CommandError("BAD_SNAPSHOT", f"a snapshot is bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises ValueError, FormatError, ExtraData, …
        raise CommandError("BAD_SNAPSHOT", f"not a msgpack snapshot: {exc}") from None


def _same(a: Any, b: Any) -> bool:
    """Value equality as replicas see it: by encoding, so 1, 1.0 and True differ."""
    return pack(a) == pack(b)


def require_str(command: dict[str, Any], field: str) -> str:
    """``command[field]`` when it is a string; else ``CommandError("BAD_ARGUMENT")``."""
    value = command.get(field)
    if not isinstance(value, str):
        raise CommandError(
            "BAD_ARGUMENT", f"{field!r} must be a string, got {type(value).__name__}"
        )
    return value


def require_op(command: Command) -> tuple[dict[str, Any], str]:
    """``(command, op)`` for a map with a string ``op``; else ``CommandError("BAD_COMMAND")``."""
    if not isinstance(command, dict):
        raise CommandError("BAD_COMMAND", f"command must be a map, got {type(command).__name__}")
    op = command.get("op")
    if not isinstance(op, str):
        raise CommandError("BAD_COMMAND", "command needs a string 'op'")
    return command, op


class KVStateMachine:
    """Reference key-value machine: ``get``, ``put``, ``append`` and ``cas`` on string keys.

    Commands (all values are strings):

    - ``{"op": "get", "key": k}`` → the value, ``""`` when the key was never written;
    - ``{"op": "put", "key": k, "value": v}`` → ``None``;
    - ``{"op": "append", "key": k, "value": v}`` → ``None``; the value becomes old + v;
    - ``{"op": "cas", "key": k, "old": o, "new": n}`` → ``True`` when the value was ``o``
      and is now ``n``, ``False`` when it was something else (nothing changes).

    A never-written key compares equal to ``""`` in ``cas``. This matches the ``kv`` model of
    the linearizability checker, so simulator histories check against it directly.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: Command) -> Result:
        """Apply one KV command; raise :class:`CommandError` on a malformed one."""
        cmd, op = require_op(command)
        key = require_str(cmd, "key")
        if op == "get":
            return self.data.get(key, "")
        if op == "put":
            self.data[key] = require_str(cmd, "value")
            return None
        if op == "append":
            value = require_str(cmd, "value")
            self.data[key] = self.data.get(key, "") + value
            return None
        if op == "cas":
            old = require_str(cmd, "old")
            new = require_str(cmd, "new")
            if self.data.get(key, "") != old:
                return False
            self.data[key] = new
            return True
        raise CommandError("UNKNOWN_OP", f"KV machine has no op {op!r}")

    def snapshot(self) -> bytes:
        """Serialise the map with keys in sorted order (equal maps give equal bytes)."""
        return pack(sorted(self.data.items()))

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by :meth:`snapshot`."""
        items = _unpack(data)
        if not isinstance(items, list) or not all(
            isinstance(kv, list) and len(kv) == 2 and all(isinstance(x, str) for x in kv)
            for kv in items
        ):
            raise CommandError("BAD_SNAPSHOT", "KV snapshot must be a list of [key, value] strings")
        self.data = {k: v for k, v in items}


class RegisterStateMachine:
    """Reference single-register machine: ``read``, ``write`` and ``cas``; starts as ``None``.

    - ``{"op": "read"}`` → current value;
    - ``{"op": "write", "value": v}`` → ``None``;
    - ``{"op": "cas", "old": o, "new": n}`` → ``True`` if swapped, ``False`` otherwise.
    """

    def __init__(self) -> None:
        self.value: Any = None

    def apply(self, command: Command) -> Result:
        """Apply one register command; raise :class:`CommandError` on a malformed one."""
        cmd, op = require_op(command)
        if op == "read":
            return self.value
        if op == "write":
            if "value" not in cmd:
                raise CommandError("BAD_ARGUMENT", "write needs a 'value'")
            self.value = cmd["value"]
            return None
        if op == "cas":
            if "old" not in cmd or "new" not in cmd:
                raise CommandError("BAD_ARGUMENT", "cas needs 'old' and 'new'")
            if not _same(self.value, cmd["old"]):
                return False
            self.value = cmd["new"]
            return True
        raise CommandError("UNKNOWN_OP", f"register machine has no op {op!r}")

    def snapshot(self) -> bytes:
        """Serialise the register value."""
        return pack([self.value])

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by :meth:`snapshot`."""
        loaded = _unpack(data)
        if not isinstance(loaded, list) or len(loaded) != 1:
            raise CommandError("BAD_SNAPSHOT", "register snapshot must be a one-element list")
        self.value = loaded[0]


class SessionTable:
    """Exactly-once application of client commands identified by ``(client, seq)``.

    A client numbers its requests 1, 2, 3, … and retries a request with the *same* number
    until it gets an answer. Each replica keeps, per client, the highest sequence applied
    and its result; a committed entry whose sequence is not higher is answered from the
    table and not applied again. The table is part of the replicated state (it goes into
    snapshots), so all replicas deduplicate identically.

    Clients must not have more than one request outstanding (``seq`` is applied strictly
    in order per client), which is the contract the simulator's and runtime's clients keep.
    """

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        self.sessions: dict[str, tuple[int, Result]] = {}
        self.applied_count = 0
        self.duplicate_count = 0

    def apply(self, client: str | None, seq: int, command: Command) -> Result:
        """Apply ``command`` unless ``(client, seq)`` was applied before; return its result.

        ``client=None`` means an anonymous command that is always applied.
        A rejected command's result is a :class:`CommandRejected`.
        """
        if client is not None:
            last = self.sessions.get(client)
            if last is not None and seq <= last[0]:
                self.duplicate_count += 1
                return last[1] if seq == last[0] else CommandRejected("STALE", "older request")
        try:
            result = self.machine.apply(command)
        except CommandError as exc:
            result = CommandRejected(exc.code, exc.message)
        self.applied_count += 1
        if client is not None:
            self.sessions[client] = (seq, result)
        return result

    def snapshot(self) -> bytes:
        """Serialise the session table together with the machine's snapshot."""
        sessions = sorted(
            (
                c,
                s,
                [r.code, r.message] if isinstance(r, CommandRejected) else None,
                None if isinstance(r, CommandRejected) else r,
            )
            for c, (s, r) in self.sessions.items()
        )
        return pack([sessions, self.machine.snapshot()])

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by :meth:`snapshot`; on a bad one nothing changes."""
        loaded = _unpack(data)
        if not isinstance(loaded, list) or len(loaded) != 2 or not isinstance(loaded[1], bytes):
            raise CommandError("BAD_SNAPSHOT", "session snapshot must be [sessions, machine]")
        rows, machine_data = loaded
        if not isinstance(rows, list):
            raise CommandError("BAD_SNAPSHOT", "sessions must be a list")
        sessions: dict[str, tuple[int, Result]] = {}
        for row in rows:
            if not (
                isinstance(row, list)
                and len(row) == 4
                and isinstance(row[0], str)
                and type(row[1]) is int
                and (
                    row[2] is None
                    or (
                        isinstance(row[2], list)
                        and len(row[2]) == 2
                        and all(isinstance(x, str) for x in row[2])
                    )
                )
            ):
                raise CommandError("BAD_SNAPSHOT", f"bad session row {row!r:.80}")
            client, seq, rej, result = row
            sessions[client] = (seq, CommandRejected(rej[0], rej[1]) if rej else result)
        self.machine.restore(machine_data)  # validates before it changes anything
        self.sessions = sessions
