"""Reading snapshots: the value checks of :mod:`.validation`, raising ``BadSnapshot``.

A machine's ``restore`` decodes the bytes with :func:`decode_snapshot`, reads every value
through these functions into *new* objects, and only then swaps them in; a check that fails
raises :class:`~ruflo_consensus.federation.errors.BadSnapshot` and the machine is untouched.
The readers never convert one type into another (no ``bytes(n)``, no ``int(inf)``), so the
only exception they raise is ``BadSnapshot``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ruflo_consensus.canonical import canonical_bytes, canonical_loads
from ruflo_consensus.federation.errors import BadSnapshot
from ruflo_consensus.federation.validation import (
    MAX_COUNT,
    MAX_ID_LEN,
    MAX_NOW_MS,
    MAX_PAYLOAD_BYTES,
    MAX_TIME_MS,
    check_bool,
    check_bytes,
    check_choice,
    check_int,
    check_list,
    check_number,
    check_text,
    check_value,
)

__all__ = [
    "decode_snapshot",
    "ensure_encodable",
    "w_bool",
    "w_bytes",
    "w_choice",
    "w_clock",
    "w_count",
    "w_float",
    "w_int",
    "w_list",
    "w_map",
    "w_opt_text",
    "w_opt_time",
    "w_pairs",
    "w_row",
    "w_rows",
    "w_text",
    "w_time",
    "w_value",
]


def decode_snapshot(data: Any, what: str) -> Any:
    """The value encoded in snapshot bytes; :class:`BadSnapshot` when they are not msgpack."""
    if not isinstance(data, (bytes, bytearray)):
        raise BadSnapshot(f"a {what} snapshot must be bytes")
    try:
        return canonical_loads(bytes(data))
    except Exception as exc:  # msgpack raises many types; nothing has been changed yet
        raise BadSnapshot(f"undecodable {what} snapshot: {type(exc).__name__}") from None


def ensure_encodable(value: Any, what: str) -> None:
    """Raise :class:`BadSnapshot` unless ``value`` has a canonical encoding.

    The last check of a restore, on the newly built state before it is swapped in, so that
    a restored machine can always take its own snapshot.
    """
    try:
        canonical_bytes(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadSnapshot(
            f"{what} snapshot holds a value with no canonical encoding: {exc!r}"
        ) from None


def w_int(value: Any, name: str, *, lo: int = 0, hi: int = MAX_COUNT) -> int:
    """An integer in ``[lo, hi]``."""
    return check_int(value, name, lo=lo, hi=hi, error=BadSnapshot)


def w_count(value: Any, name: str) -> int:
    """A counter: an integer in ``[0, MAX_COUNT]``."""
    return check_int(value, name, lo=0, hi=MAX_COUNT, error=BadSnapshot)


def w_clock(value: Any, name: str = "clock") -> int:
    """A machine clock: an integer in ``[0, MAX_NOW_MS]`` (the largest accepted ``now``)."""
    return check_int(value, name, lo=0, hi=MAX_NOW_MS, error=BadSnapshot)


def w_time(value: Any, name: str) -> int:
    """A stored time in ms: an integer in ``[0, MAX_TIME_MS]``."""
    return check_int(value, name, lo=0, hi=MAX_TIME_MS, error=BadSnapshot)


def w_opt_time(value: Any, name: str) -> int | None:
    """A stored time or ``None``."""
    return None if value is None else w_time(value, name)


def w_float(value: Any, name: str, *, lo: float, hi: float) -> float:
    """A finite number in ``[lo, hi]`` as ``float``."""
    return check_number(value, name, lo=lo, hi=hi, error=BadSnapshot)


def w_text(value: Any, name: str, *, max_len: int = MAX_ID_LEN, allow_empty: bool = False) -> str:
    """UTF-8 encodable text of at most ``max_len`` characters."""
    return check_text(value, name, max_len=max_len, allow_empty=allow_empty, error=BadSnapshot)


def w_opt_text(value: Any, name: str, *, max_len: int = MAX_ID_LEN) -> str | None:
    """Text or ``None``."""
    return None if value is None else w_text(value, name, max_len=max_len)


def w_bool(value: Any, name: str) -> bool:
    """A boolean."""
    return check_bool(value, name, error=BadSnapshot)


def w_bytes(
    value: Any, name: str, *, length: int | None = None, min_len: int = 0, max_len: int = 4096
) -> bytes:
    """Binary data (never an integer turned into that many zero bytes)."""
    return check_bytes(
        value, name, length=length, min_len=min_len, max_len=max_len, error=BadSnapshot
    )


def w_choice(value: Any, name: str, options: Iterable[str]) -> str:
    """One of ``options``."""
    return check_choice(value, name, options, error=BadSnapshot)


def w_list(value: Any, name: str, *, max_items: int | None = None) -> list[Any]:
    """A list of at most ``max_items`` items."""
    return check_list(value, name, max_items=max_items, error=BadSnapshot)


def w_row(value: Any, name: str, width: int) -> list[Any]:
    """A list of exactly ``width`` items (a record in list form)."""
    return check_list(value, name, length=width, error=BadSnapshot)


def w_rows(value: Any, name: str, width: int, *, max_items: int | None = None) -> list[list[Any]]:
    """A list of rows of ``width`` items each."""
    return [w_row(row, name, width) for row in w_list(value, name, max_items=max_items)]


def w_map(value: Any, name: str, keys: Iterable[str]) -> dict[str, Any]:
    """A map with exactly the string keys ``keys``."""
    wanted = set(keys)
    if not isinstance(value, dict) or set(value) != wanted:
        raise BadSnapshot(f"{name!r} must be a map with keys {sorted(wanted)}")
    return value


def w_pairs(value: Any, name: str, *, max_key_len: int = MAX_ID_LEN) -> list[tuple[str, Any]]:
    """``[[key, value], ...]`` with distinct text keys (how maps of records are stored)."""
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for key, item in w_rows(value, name, 2):
        text = w_text(key, f"{name} key", max_len=max_key_len)
        if text in seen:
            raise BadSnapshot(f"{name!r} has the key {text!r} twice")
        seen.add(text)
        out.append((text, item))
    return out


def w_value(value: Any, name: str, *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """Any canonically encodable value of at most ``limit`` bytes (payloads, metadata)."""
    return check_value(value, name, limit=limit, error=BadSnapshot, too_large=BadSnapshot)
