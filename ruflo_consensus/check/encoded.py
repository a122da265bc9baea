"""What replicas are compared by: the bytes of what was replicated, not Python equality.

Checks that compare commands, results or states across replicas must not use ``==`` on
decoded values: ``float("nan") != float("nan")``, so two byte-identical commands carrying
a NaN (a deliberately bad budget, say) would look different, and a safety check would
report a violation that never happened. (``==`` also calls ``1 == 1.0 == True`` and a tuple
and a list equal, which the encodings do not.)

- :func:`wire_bytes` — a command or entry as the WAL and the wire carry it: plain msgpack,
  map order kept, floats bit for bit (NaN and infinities included). A command that went
  through a replica's log or a message decodes and re-encodes to the same bytes.
  (``ruflo_consensus.canonical`` refuses NaN, so it cannot be used for commands that may
  carry one.)
- :func:`state_bytes` — a state or value read from a replica, in a canonical order: maps
  sorted by key (two replicas may build the same map in different orders), tuples as
  lists, floats bit for bit.

Values msgpack cannot carry fall back to their ``repr``, so a comparison never raises.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..canonical import key_rank

__all__ = ["same_command", "same_state", "state_bytes", "wire_bytes"]


def _fallback(value: Any) -> Any:
    return {"__repr__": repr(value)}


def wire_bytes(value: Any) -> bytes:
    """``value`` as msgpack bytes, the way the WAL and the wire encode it."""
    try:
        encoded: bytes = msgpack.packb(value, use_bin_type=True, default=_fallback)
    except (OverflowError, ValueError):
        encoded = b"\xc1repr:" + repr(value).encode()  # 0xc1 starts no msgpack value
    return encoded


def _key_rank(key: Any) -> tuple[int, Any]:
    """The canonical order of map keys, with any other key type last, by its ``repr``."""
    try:
        return key_rank(key)
    except TypeError:
        return (3, repr(key))


def _ordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ordered(value[k]) for k in sorted(value, key=_key_rank)}
    if isinstance(value, (list, tuple)):
        return [_ordered(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_ordered(v) for v in value), key=state_bytes)
    return value


def state_bytes(value: Any) -> bytes:
    """``value`` as msgpack bytes with every map's keys in canonical order."""
    return wire_bytes(_ordered(value))


def same_command(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` encode to the same bytes (see :func:`wire_bytes`)."""
    return a is b or wire_bytes(a) == wire_bytes(b)


def same_state(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are the same state, map order aside (:func:`state_bytes`)."""
    return a is b or state_bytes(a) == state_bytes(b)
