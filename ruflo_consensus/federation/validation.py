"""Value and field checks shared by the federation machines.

Every check raises a typed :class:`~ruflo_consensus.federation.errors.FederationError`
and never mutates anything, so machines can run all of them before touching state. The
``check_*`` functions are the one layer of wire-value rules (UTF-8 text, integers in range,
finite numbers, real bytes, canonically encodable values); commands use them through the
``req_*``/``opt_*`` helpers here, snapshots through :mod:`ruflo_consensus.federation.wire`.

Time: every command carries ``now``, an **integer number of milliseconds** (any epoch the
federation agrees on, e.g. Unix time in ms). A machine's clock is the largest ``now`` it has
accepted; a command is evaluated at ``max(clock, now)``, so time never runs backwards and a
back-dated command cannot reopen a window that has closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ruflo_consensus.canonical import canonical_bytes, normalize
from ruflo_consensus.federation.errors import (
    BadArgument,
    BadCommand,
    FederationError,
    TooLarge,
    UnknownOp,
)

__all__ = [
    "INT63_MAX",
    "INT_MAX",
    "INT_MIN",
    "MAX_COUNT",
    "MAX_ID_LEN",
    "MAX_NOW_MS",
    "MAX_PAYLOAD_BYTES",
    "MAX_TIME_MS",
    "Commit",
    "ErrorType",
    "check_bool",
    "check_bytes",
    "check_choice",
    "check_fields",
    "check_int",
    "check_list",
    "check_number",
    "check_text",
    "check_value",
    "effective_time",
    "opt_bool",
    "opt_int",
    "opt_number",
    "opt_str",
    "parse_command",
    "req_bool",
    "req_bytes",
    "req_int",
    "req_now",
    "req_number",
    "req_str",
    "req_str_list",
    "text_is_encodable",
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

MAX_TIME_MS = 2**62
"""Largest time a snapshot may hold (session and proposal expiries lie after ``now``; the
headroom keeps sums such as ``suspended_at + evict_after_ms`` inside msgpack's range)."""

MAX_COUNT = 2**62
"""Largest counter a snapshot may hold (counters grow by bounded steps per command)."""

INT_MIN = -(2**63)
"""Smallest integer msgpack carries."""
INT_MAX = 2**64 - 1
"""Largest integer msgpack carries."""
INT63_MAX = 2**63 - 1
"""Default upper bound of integer fields."""

ErrorType = Callable[[str], FederationError]
"""The typed error a check raises: ``BadArgument`` for commands, ``BadSnapshot`` for restores."""

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


def check_fields(
    cmd: dict[str, Any], allowed: Iterable[str], *, error: ErrorType = BadArgument
) -> None:
    """Reject fields that the op does not know (typos such as ``maxHops`` fail loudly)."""
    known = _COMMON_FIELDS.union(allowed)
    extra = sorted(_shown(k) for k in cmd if k not in known)
    if extra:
        raise error(f"unknown field(s): {', '.join(extra)}")


def req_now(cmd: dict[str, Any]) -> int:
    """The command's ``now``: an int of milliseconds in ``[0, 2**53]``."""
    return req_int(cmd, "now", lo=0, hi=MAX_NOW_MS)


def effective_time(clock: int, cmd: dict[str, Any]) -> int:
    """``max(clock, now)``: the time at which the command is evaluated."""
    return max(clock, req_now(cmd))


def text_is_encodable(value: str) -> bool:
    """True when ``value`` encodes as UTF-8 (no lone surrogates such as ``'\\ud800'``)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any) -> str:
    """``str(value)`` made safe to put into an error message (UTF-8 encodable)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


# --------------------------------------------------------------- value checks
#
# One check per kind of wire value, shared by command planning (``error=BadArgument``, the
# ``req_*`` helpers below) and snapshot loading (``error=BadSnapshot``, see
# :mod:`ruflo_consensus.federation.wire`). None of them converts a value into another
# type: ``bytes(n)`` of an integer or ``float(n)`` of an integer past the float range never
# happens, so a check can only return the value or raise ``error``.


def check_int(
    value: Any, name: str, *, lo: int = 0, hi: int = INT63_MAX, error: ErrorType = BadArgument
) -> int:
    """An integer in ``[lo, hi]`` (``bool`` is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name!r} must be an integer")
    if not lo <= value <= hi:
        raise error(f"{name!r} must be in [{lo}, {hi}]")
    return int(value)


def check_number(
    value: Any, name: str, *, lo: float, hi: float, error: ErrorType = BadArgument
) -> float:
    """A finite int or float in ``[lo, hi]``, returned as ``float``.

    Integers outside msgpack's range are refused before any conversion (``float(2**1100)``
    would raise ``OverflowError``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{name!r} must be a number")
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise error(f"{name!r} must be in [{lo}, {hi}]")
    number = float(value)
    if not math.isfinite(number):
        raise error(f"{name!r} must be finite")
    if not lo <= number <= hi:
        raise error(f"{name!r} must be in [{lo}, {hi}]")
    return number


def check_text(
    value: Any,
    name: str,
    *,
    max_len: int = MAX_ID_LEN,
    allow_empty: bool = False,
    error: ErrorType = BadArgument,
) -> str:
    """A UTF-8 encodable string of at most ``max_len`` characters (non-empty unless allowed)."""
    if not isinstance(value, str):
        raise error(f"{name!r} must be a string")
    if not value and not allow_empty:
        raise error(f"{name!r} must not be empty")
    if len(value) > max_len:
        raise error(f"{name!r} is longer than {max_len} characters")
    if not text_is_encodable(value):
        raise error(f"{name!r} is not valid text (lone surrogate)")
    return value


def check_bool(value: Any, name: str, *, error: ErrorType = BadArgument) -> bool:
    """A boolean."""
    if not isinstance(value, bool):
        raise error(f"{name!r} must be a boolean")
    return value


def check_bytes(
    value: Any,
    name: str,
    *,
    length: int | None = None,
    min_len: int = 0,
    max_len: int = 4096,
    error: ErrorType = BadArgument,
) -> bytes:
    """Binary data (``bytes`` or ``bytearray``, never an integer), of ``length`` when given."""
    if not isinstance(value, (bytes, bytearray)):
        raise error(f"{name!r} must be bytes")
    if length is not None and len(value) != length:
        raise error(f"{name!r} must be {length} bytes")
    if not min_len <= len(value) <= max_len:
        raise error(f"{name!r} must be {min_len}..{max_len} bytes")
    return bytes(value)


def check_choice(
    value: Any, name: str, options: Iterable[str], *, error: ErrorType = BadArgument
) -> str:
    """One of the strings ``options``."""
    allowed = tuple(options)
    if not isinstance(value, str) or value not in allowed:
        raise error(f"{name!r} must be one of {list(allowed)}")
    return value


def check_list(
    value: Any,
    name: str,
    *,
    max_items: int | None = None,
    length: int | None = None,
    error: ErrorType = BadArgument,
) -> list[Any]:
    """A list (or tuple), of exactly ``length`` or at most ``max_items`` items."""
    if not isinstance(value, (list, tuple)):
        raise error(f"{name!r} must be a list")
    if length is not None and len(value) != length:
        raise error(f"{name!r} must have {length} items")
    if max_items is not None and len(value) > max_items:
        raise error(f"{name!r} has more than {max_items} items")
    return list(value)


def check_value(
    value: Any,
    name: str,
    *,
    limit: int = MAX_PAYLOAD_BYTES,
    error: ErrorType = BadArgument,
    too_large: ErrorType = TooLarge,
) -> Any:
    """Any value with a canonical encoding of at most ``limit`` bytes, in canonical form.

    Refuses what the encoder would choke on later: NaN, integers outside msgpack's range,
    lone surrogates, nesting deeper than the canonical limit, non-msgpack types.
    """
    try:
        size = len(canonical_bytes(value))
        normal = normalize(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(f"{name!r} has no canonical encoding: {_shown(exc)}") from None
    if size > limit:
        raise too_large(f"{name!r} is larger than {limit} bytes")
    return normal


# ------------------------------------------------------------- command fields


def req_int(
    cmd: dict[str, Any],
    field: str,
    *,
    lo: int = 0,
    hi: int = INT63_MAX,
    error: ErrorType = BadArgument,
) -> int:
    """A required integer in ``[lo, hi]`` (``bool`` is not an integer here)."""
    return check_int(cmd.get(field), field, lo=lo, hi=hi, error=error)


def opt_int(
    cmd: dict[str, Any], field: str, default: int, *, lo: int = 0, hi: int = INT63_MAX
) -> int:
    """An optional integer in ``[lo, hi]``; ``default`` when absent or ``None``."""
    if cmd.get(field) is None:
        return default
    return req_int(cmd, field, lo=lo, hi=hi)


def req_number(
    cmd: dict[str, Any], field: str, *, lo: float, hi: float, error: ErrorType = BadArgument
) -> float:
    """A required finite int or float in ``[lo, hi]``, returned as ``float``."""
    return check_number(cmd.get(field), field, lo=lo, hi=hi, error=error)


def opt_number(
    cmd: dict[str, Any], field: str, default: float | None, *, lo: float, hi: float
) -> float | None:
    """An optional finite number in ``[lo, hi]``; ``default`` when absent or ``None``."""
    if cmd.get(field) is None:
        return default
    return req_number(cmd, field, lo=lo, hi=hi)


def req_str(
    cmd: dict[str, Any],
    field: str,
    *,
    max_len: int = MAX_ID_LEN,
    allow_empty: bool = False,
    error: ErrorType = BadArgument,
) -> str:
    """A required string of at most ``max_len`` characters (non-empty unless allowed)."""
    return check_text(cmd.get(field), field, max_len=max_len, allow_empty=allow_empty, error=error)


def opt_str(
    cmd: dict[str, Any],
    field: str,
    *,
    max_len: int = MAX_ID_LEN,
    allow_empty: bool = False,
    error: ErrorType = BadArgument,
) -> str | None:
    """An optional string; ``None`` when absent or ``None``."""
    if cmd.get(field) is None:
        return None
    return req_str(cmd, field, max_len=max_len, allow_empty=allow_empty, error=error)


def req_bool(cmd: dict[str, Any], field: str) -> bool:
    """A required boolean."""
    return check_bool(cmd.get(field), field)


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
    error: ErrorType = BadArgument,
) -> bytes:
    """Required binary data, of exactly ``length`` bytes when given."""
    return check_bytes(
        cmd.get(field), field, length=length, min_len=min_len, max_len=max_len, error=error
    )


def req_str_list(
    cmd: dict[str, Any],
    field: str,
    *,
    max_items: int = 64,
    max_len: int = 64,
    allowed: frozenset[str] | None = None,
    unique: bool = True,
    error: ErrorType = BadArgument,
) -> list[str]:
    """A required list of non-empty strings (optionally from ``allowed``, without duplicates)."""
    items = check_list(cmd.get(field), field, max_items=max_items, error=error)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item or len(item) > max_len:
            raise error(f"{field!r} items must be strings of 1..{max_len} characters")
        check_text(item, field, max_len=max_len, error=error)
        if allowed is not None and item not in allowed:
            raise error(f"{field!r}: {item!r} is not one of {sorted(allowed)}")
        out.append(item)
    if unique and len(set(out)) != len(out):
        raise error(f"{field!r} has duplicates")
    return out
