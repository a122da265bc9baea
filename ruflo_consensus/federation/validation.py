"""Field checks shared by the federation machines.

Every check raises a typed :class:`~ruflo_consensus.federation.errors.FederationError`
and never mutates anything, so machines can run all of them before touching state.

Time: every command carries ``now``, an **integer number of milliseconds** (any epoch the
federation agrees on, e.g. Unix time in ms). A machine's clock is the largest ``now`` it has
accepted; a command is evaluated at ``max(clock, now)``, so time never runs backwards and a
back-dated command cannot reopen a window that has closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.federation.errors import BadArgument, BadCommand, TooLarge, UnknownOp

__all__ = [
    "MAX_ID_LEN",
    "MAX_NOW_MS",
    "MAX_PAYLOAD_BYTES",
    "Commit",
    "check_fields",
    "effective_time",
    "opt_bool",
    "opt_int",
    "opt_number",
    "opt_str",
    "parse_command",
    "payload_size",
    "req_bool",
    "req_bytes",
    "req_int",
    "req_now",
    "req_number",
    "req_str",
    "req_str_list",
]

Commit = Callable[[], Any]
"""A validated command's effect: calling it mutates state and returns the result; it never raises
a :class:`CommandError` (all checks have already passed)."""

MAX_ID_LEN = 256
"""Longest node id, session id, proposal id, delegation id or state key accepted."""

MAX_NOW_MS = 2**53
"""Largest timestamp accepted (the largest integer a JavaScript client can send exactly)."""

MAX_PAYLOAD_BYTES = 1 << 20
"""Largest canonical payload (1 MiB, the federation's message limit)."""

_COMMON_FIELDS = frozenset({"op", "now", "node"})


def parse_command(command: Any, namespace: str) -> tuple[dict[str, Any], str]:
    """Return ``(command, op)`` with the ``namespace.`` prefix removed from ``op`` if present."""
    if not isinstance(command, dict):
        raise BadCommand(f"command must be a map, got {type(command).__name__}")
    op = command.get("op")
    if not isinstance(op, str):
        raise BadCommand("command needs a string 'op'")
    prefix = namespace + "."
    if op.startswith(prefix):
        op = op[len(prefix) :]
    elif "." in op:
        raise UnknownOp(f"{namespace} machine has no op {op!r}")
    return command, op


def check_fields(cmd: dict[str, Any], allowed: Iterable[str]) -> None:
    """Reject fields that the op does not know (typos such as ``maxHops`` fail loudly)."""
    known = _COMMON_FIELDS.union(allowed)
    extra = sorted(str(k) for k in cmd if k not in known)
    if extra:
        raise BadArgument(f"unknown field(s): {', '.join(extra)}")


def req_now(cmd: dict[str, Any]) -> int:
    """The command's ``now``: an int of milliseconds in ``[0, 2**53]``."""
    return req_int(cmd, "now", lo=0, hi=MAX_NOW_MS)


def effective_time(clock: int, cmd: dict[str, Any]) -> int:
    """``max(clock, now)``: the time at which the command is evaluated."""
    return max(clock, req_now(cmd))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def req_int(cmd: dict[str, Any], field: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """A required integer in ``[lo, hi]`` (``bool`` is not an integer here)."""
    value = cmd.get(field)
    if not _is_int(value):
        raise BadArgument(f"{field!r} must be an integer")
    assert isinstance(value, int)
    if not lo <= value <= hi:
        raise BadArgument(f"{field!r} must be in [{lo}, {hi}]")
    return value


def opt_int(
    cmd: dict[str, Any], field: str, default: int, *, lo: int = 0, hi: int = 2**63 - 1
) -> int:
    """An optional integer in ``[lo, hi]``; ``default`` when absent or ``None``."""
    if cmd.get(field) is None:
        return default
    return req_int(cmd, field, lo=lo, hi=hi)


def req_number(cmd: dict[str, Any], field: str, *, lo: float, hi: float) -> float:
    """A required finite int or float in ``[lo, hi]``, returned as ``float``."""
    value = cmd.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArgument(f"{field!r} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise BadArgument(f"{field!r} must be finite")
    if not lo <= number <= hi:
        raise BadArgument(f"{field!r} must be in [{lo}, {hi}]")
    return number


def opt_number(
    cmd: dict[str, Any], field: str, default: float | None, *, lo: float, hi: float
) -> float | None:
    """An optional finite number in ``[lo, hi]``; ``default`` when absent or ``None``."""
    if cmd.get(field) is None:
        return default
    return req_number(cmd, field, lo=lo, hi=hi)


def req_str(
    cmd: dict[str, Any], field: str, *, max_len: int = MAX_ID_LEN, allow_empty: bool = False
) -> str:
    """A required string of at most ``max_len`` characters (non-empty unless allowed)."""
    value = cmd.get(field)
    if not isinstance(value, str):
        raise BadArgument(f"{field!r} must be a string")
    if not value and not allow_empty:
        raise BadArgument(f"{field!r} must not be empty")
    if len(value) > max_len:
        raise BadArgument(f"{field!r} is longer than {max_len} characters")
    return value


def opt_str(
    cmd: dict[str, Any], field: str, *, max_len: int = MAX_ID_LEN, allow_empty: bool = False
) -> str | None:
    """An optional string; ``None`` when absent or ``None``."""
    if cmd.get(field) is None:
        return None
    return req_str(cmd, field, max_len=max_len, allow_empty=allow_empty)


def req_bool(cmd: dict[str, Any], field: str) -> bool:
    """A required boolean."""
    value = cmd.get(field)
    if not isinstance(value, bool):
        raise BadArgument(f"{field!r} must be a boolean")
    return value


def opt_bool(cmd: dict[str, Any], field: str, default: bool) -> bool:
    """An optional boolean; ``default`` when absent or ``None``."""
    if cmd.get(field) is None:
        return default
    return req_bool(cmd, field)


def req_bytes(
    cmd: dict[str, Any],
    field: str,
    *,
    length: int | None = None,
    min_len: int = 0,
    max_len: int = 4096,
    error: Callable[[str], Exception] = BadArgument,
) -> bytes:
    """Required binary data, of exactly ``length`` bytes when given."""
    value = cmd.get(field)
    if not isinstance(value, (bytes, bytearray)):
        raise error(f"{field!r} must be bytes")
    data = bytes(value)
    if length is not None and len(data) != length:
        raise error(f"{field!r} must be {length} bytes")
    if not min_len <= len(data) <= max_len:
        raise error(f"{field!r} must be {min_len}..{max_len} bytes")
    return data


def req_str_list(
    cmd: dict[str, Any],
    field: str,
    *,
    max_items: int = 64,
    max_len: int = 64,
    allowed: frozenset[str] | None = None,
    unique: bool = True,
) -> list[str]:
    """A required list of non-empty strings (optionally from ``allowed``, without duplicates)."""
    value = cmd.get(field)
    if not isinstance(value, (list, tuple)):
        raise BadArgument(f"{field!r} must be a list of strings")
    if len(value) > max_items:
        raise BadArgument(f"{field!r} has more than {max_items} items")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item or len(item) > max_len:
            raise BadArgument(f"{field!r} items must be strings of 1..{max_len} characters")
        if allowed is not None and item not in allowed:
            raise BadArgument(f"{field!r}: {item!r} is not one of {sorted(allowed)}")
        out.append(item)
    if unique and len(set(out)) != len(out):
        raise BadArgument(f"{field!r} has duplicates")
    return out


def payload_size(value: Any, field: str, *, limit: int = MAX_PAYLOAD_BYTES) -> int:
    """Size of ``value``'s canonical encoding; reject values that have none or are too big."""
    try:
        size = len(canonical_bytes(value))
    except (TypeError, ValueError) as exc:
        raise BadArgument(f"{field!r} is not msgpack-able: {exc}") from None
    if size > limit:
        raise TooLarge(f"{field!r} is larger than {limit} bytes")
    return size
