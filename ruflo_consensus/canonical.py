"""Canonical msgpack encoding: the one byte form that signatures and snapshots use.

Two values that are equal give the same bytes: map keys are sorted recursively, tuples
become lists, ``-0.0`` becomes ``0.0`` and ``NaN`` (which is not equal to itself) is refused.
Everything that is signed (manifests, votes, challenge responses, approvals) is signed over
``canonical_bytes`` of a small map with a ``"kind"`` field, so a signature made for one
purpose can never be replayed for another.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgpack

__all__ = [
    "MAX_DEPTH",
    "canonical_bytes",
    "canonical_digest",
    "canonical_loads",
    "key_rank",
    "normalize",
]

MAX_DEPTH = 32
"""Deepest nesting accepted by :func:`canonical_bytes` (lists and maps)."""

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def key_rank(key: Any) -> tuple[int, Any]:
    """The sort key of a map key in canonical order: strings, then bytes, then integers;
    ``TypeError`` for any other key type."""
    if isinstance(key, str):
        return (0, key)
    if isinstance(key, bytes):
        return (1, key)
    if isinstance(key, int) and not isinstance(key, bool):
        return (2, int(key))
    raise TypeError(f"map keys must be str, bytes or int, got {type(key).__name__}")


def normalize(obj: Any, depth: int = 0) -> Any:
    """Return ``obj`` in canonical form (plain types, sorted maps); raise on what cannot be.

    Raises ``TypeError`` for values msgpack cannot carry (sets, objects, numpy arrays) and
    ``ValueError`` for ``NaN``, integers outside msgpack's range or nesting deeper than
    :data:`MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, int):
        value = int(obj)
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError("integer out of msgpack range")
        return value
    if isinstance(obj, float):
        value_f = float(obj)
        if math.isnan(value_f):
            raise ValueError("NaN has no canonical encoding")
        return 0.0 if value_f == 0.0 else value_f
    if isinstance(obj, (list, tuple)):
        return [normalize(item, depth + 1) for item in obj]
    if isinstance(obj, dict):
        ranked = sorted(
            ((key_rank(k), normalize(k, depth + 1), v) for k, v in obj.items()),
            key=lambda item: item[0],
        )
        out: dict[Any, Any] = {}
        for _, key, value in ranked:
            out[key] = normalize(value, depth + 1)
        return out
    raise TypeError(f"{type(obj).__name__} has no canonical encoding")


def canonical_bytes(obj: Any) -> bytes:
    """Encode ``obj`` as canonical msgpack: equal values give equal bytes.

    >>> canonical_bytes({"b": 1, "a": [1, 2]}) == canonical_bytes({"a": (1, 2), "b": 1})
    True
    """
    packed: bytes = msgpack.packb(normalize(obj), use_bin_type=True)
    return packed


def canonical_loads(data: bytes) -> Any:
    """Decode bytes made by :func:`canonical_bytes` (strings as ``str``, binary as ``bytes``)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def canonical_digest(obj: Any) -> bytes:
    """SHA-256 of :func:`canonical_bytes` of ``obj`` (32 bytes)."""
    return hashlib.sha256(canonical_bytes(obj)).digest()
