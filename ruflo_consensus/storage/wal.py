"""The on-disk format: WAL records, segment and snapshot file names, snapshot files.

A WAL **record** is a 9-byte header and a msgpack payload::

    u32 length   little-endian, bytes of payload (≥ 1)
    u32 crc      zlib.crc32 over (the 4 length bytes, the type byte, the payload)
    u8  type     a RecordType
    payload      msgpack, ``length`` bytes

The CRC is zlib's CRC-32 (IEEE polynomial, the one in the standard library), not CRC-32C;
it covers the length and type too, so a flipped length or type is caught like a flipped
payload byte.

Payloads (msgpack arrays; an entry is ``[term, client, seq, command]``, ``[term]`` when
it has no proposal, or ``[term, [kind, node, voters, learners]]`` for a Raft membership
change, its index implied by its position in the record):

====================  ===============================================================
SEGMENT_HEAD (1)      ``[seq, hard_state, marker, last_index, state]`` — first record of
                      every segment: the state so far that later segments cannot
                      rebuild once earlier ones are deleted
ENTRIES (2)           ``[truncate_from, first_index, [entry, ...]]``
HARD_STATE (3)        ``[term, vote, commit]``
SNAPSHOT_MARKER (4)   ``[index, term]`` — the snapshot lives in its own file
STATE (5)             opaque bytes (``Persist.state``)
BATCH (6)             ``[[type, payload], ...]`` — one ``save()`` that changes more than
                      one thing, so that it is all-or-nothing under one CRC
====================  ===============================================================

``hard_state`` is ``[term, vote, commit]`` or ``None``; ``marker`` is ``[index, term]`` or
``None``.

A **snapshot file** ``snap-<index:016x>-<term:016x>.snap`` is ``b"RFSNAP01"``, u32 length,
u32 zlib.crc32 of the payload, and the payload ``[index, term, voters, learners, data]``.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack

from ..core.base import ConfChange, ConfChangeKind, Entry, HardState, Proposal, Snapshot
from .fs import ReadFile

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "SNAP_MAGIC",
    "Malformed",
    "RecordType",
    "SegmentReader",
    "decode_entries",
    "decode_hard_state",
    "decode_marker",
    "decode_snapshot",
    "encode_entries",
    "encode_hard_state",
    "encode_record",
    "encode_snapshot",
    "find_valid_record",
    "parse_segment_name",
    "parse_snapshot_name",
    "read_entries_header",
    "read_entry_items",
    "segment_name",
    "snapshot_name",
]

HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size  # 9
_LEN_TYPE = struct.Struct("<IB")
_U32 = struct.Struct("<I")
MAX_PAYLOAD = (1 << 32) - 1
SNAP_MAGIC = b"RFSNAP01"
_SNAP_HEADER = struct.Struct("<8sII")

_SEGMENT_RE = re.compile(r"wal-([0-9a-f]{16})\.log")
_SNAPSHOT_RE = re.compile(r"snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap")


class RecordType(enum.IntEnum):
    """The kind of a WAL record (the header's type byte)."""

    SEGMENT_HEAD = 1
    ENTRIES = 2
    HARD_STATE = 3
    SNAPSHOT_MARKER = 4
    STATE = 5
    BATCH = 6


_TYPES = frozenset(int(t) for t in RecordType)
_TYPE_BYTE_RE = re.compile(b"[" + bytes(sorted(_TYPES)) + b"]")


class Malformed(ValueError):
    """A payload passed its CRC but does not have the shape its type requires."""


# ----------------------------------------------------------------------------- names


def segment_name(seq: int) -> str:
    """File name of WAL segment ``seq``: ``wal-<16 hex digits>.log``."""
    return f"wal-{seq:016x}.log"


def parse_segment_name(name: str) -> int | None:
    """The sequence number of a segment file name, or ``None`` if it is not one."""
    m = _SEGMENT_RE.fullmatch(name)
    return int(m.group(1), 16) if m else None


def snapshot_name(index: int, term: int) -> str:
    """File name of the snapshot at ``(index, term)``: ``snap-<index>-<term>.snap`` (hex)."""
    return f"snap-{index:016x}-{term:016x}.snap"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` of a snapshot file name, or ``None`` if it is not one."""
    m = _SNAPSHOT_RE.fullmatch(name)
    return (int(m.group(1), 16), int(m.group(2), 16)) if m else None


# ----------------------------------------------------------------------------- records


def pack(obj: Any) -> bytes:
    """msgpack with the bin type (bytes stay bytes)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(payload: bytes) -> Any:
    """Decode one msgpack payload; raise :class:`Malformed` if it is not valid msgpack."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise Malformed(f"payload is not msgpack ({type(exc).__name__}: {exc})") from None


def record_crc(length: int, rtype: int, payload: bytes | memoryview) -> int:
    """The CRC a record header carries."""
    return zlib.crc32(payload, zlib.crc32(_LEN_TYPE.pack(length, rtype)))


def encode_record(rtype: RecordType, obj: Any) -> bytes:
    """Header + msgpack payload of one record."""
    payload = pack(obj)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes is over the 4 GiB limit")
    return HEADER.pack(len(payload), record_crc(len(payload), rtype, payload), rtype) + payload


def encode_hard_state(hs: HardState | None) -> list[Any] | None:
    """``[term, vote, commit]`` or ``None``."""
    return None if hs is None else [hs.term, hs.vote, hs.commit]


def decode_hard_state(obj: Any) -> HardState | None:
    """Inverse of :func:`encode_hard_state`; :class:`Malformed` on a wrong shape."""
    if obj is None:
        return None
    if (
        not isinstance(obj, list)
        or len(obj) != 3
        or not isinstance(obj[0], int)
        or not (obj[1] is None or isinstance(obj[1], str))
        or not isinstance(obj[2], int)
    ):
        raise Malformed("hard state is not [term, vote, commit]")
    return HardState(obj[0], obj[1], obj[2])


def decode_marker(obj: Any) -> tuple[int, int] | None:
    """``[index, term]`` → ``(index, term)``; ``None`` stays ``None``."""
    if obj is None:
        return None
    if (
        not isinstance(obj, list)
        or len(obj) != 2
        or not isinstance(obj[0], int)
        or not isinstance(obj[1], int)
        or obj[0] < 0
        or obj[1] < 0
    ):
        raise Malformed("snapshot marker is not [index, term]")
    return obj[0], obj[1]


def encode_entries(truncate_from: int | None, entries: list[Entry]) -> list[Any]:
    """Payload of an ENTRIES record (indices implied from the first one)."""
    first = entries[0].index if entries else 0
    items: list[Any] = []
    append = items.append
    for e in entries:
        p = e.proposal
        if p is not None:
            append([e.term, p.client, p.seq, p.command])
        elif e.conf is None:
            append([e.term])
        else:
            append([e.term, _encode_conf(e.conf)])
    return [truncate_from, first, items]


def _encode_conf(c: ConfChange) -> list[Any]:
    return [c.kind.value, c.node, list(c.voters), list(c.learners)]


def _decode_conf(obj: Any) -> ConfChange:
    if (
        not isinstance(obj, list)
        or len(obj) != 4
        or not isinstance(obj[1], str)
        or not isinstance(obj[2], list)
        or not isinstance(obj[3], list)
        or not all(isinstance(v, str) for v in obj[2] + obj[3])
    ):
        raise ValueError("configuration is not [kind, node, voters, learners]")
    return ConfChange(ConfChangeKind(obj[0]), obj[1], tuple(obj[2]), tuple(obj[3]))


def decode_entries(obj: Any) -> tuple[int | None, int, list[Entry]]:
    """Payload of an ENTRIES record → ``(truncate_from, first_index, entries)``."""
    if not isinstance(obj, list) or len(obj) != 3:
        raise Malformed("entries record is not [truncate_from, first_index, items]")
    truncate_from, first, items = obj
    if not (truncate_from is None or isinstance(truncate_from, int)):
        raise Malformed("truncate_from is not an integer")
    if not isinstance(first, int) or not isinstance(items, list):
        raise Malformed("entries record has a bad first index or item list")
    if items and first < 1:
        raise Malformed("entries start below index 1")
    return truncate_from, first, _entries_from_items(iter(items), first, len(items))


def read_entries_header(u: msgpack.Unpacker) -> tuple[int | None, int, int]:
    """Read an ENTRIES payload up to its items: ``(truncate_from, first_index, count)``.

    The unpacker is left before the first item, so the caller can skip items it does not
    need (``u.skip()``) and decode the rest with :func:`read_entry_items`.
    """
    if u.read_array_header() != 3:
        raise Malformed("entries record is not [truncate_from, first_index, items]")
    truncate_from = u.unpack()
    first = u.unpack()
    if not (truncate_from is None or isinstance(truncate_from, int)):
        raise Malformed("truncate_from is not an integer")
    if not isinstance(first, int):
        raise Malformed("entries record has a bad first index or item list")
    try:
        count = u.read_array_header()
    except Exception:  # not an array
        raise Malformed("entries record has a bad first index or item list") from None
    if count and first < 1:
        raise Malformed("entries start below index 1")
    return truncate_from, first, count


def read_entry_items(u: msgpack.Unpacker, first: int, count: int) -> list[Entry]:
    """Decode the next ``count`` entry items of an ENTRIES payload, indexed from ``first``."""
    return _entries_from_items(u, first, count)


def _entries_from_items(items: Iterator[Any], first: int, count: int) -> list[Entry]:
    out: list[Entry] = []
    append = out.append
    clients: dict[str, str] = {}
    index = first
    try:
        for _ in range(count):
            item = next(items)
            if len(item) == 1:
                append(Entry(item[0], index, None))
            elif len(item) == 2:
                append(Entry(item[0], index, None, _decode_conf(item[1])))
            else:
                term, client, seq, command = item
                if client is not None:
                    client = clients.setdefault(client, client)
                append(Entry(term, index, Proposal(client, seq, command)))
            index += 1
    except (TypeError, ValueError) as exc:
        raise Malformed(
            f"entry {index} is not [term], [term, conf] or [term, client, seq, command]: {exc}"
        ) from None
    return out


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The bytes of a snapshot file."""
    payload = pack(
        [
            snapshot.index,
            snapshot.term,
            list(snapshot.voters),
            list(snapshot.learners),
            bytes(snapshot.data),
        ]
    )
    return _SNAP_HEADER.pack(SNAP_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_snapshot(data: bytes) -> Snapshot:
    """Inverse of :func:`encode_snapshot`; :class:`Malformed` says what is wrong."""
    if len(data) < _SNAP_HEADER.size:
        raise Malformed(f"file is {len(data)} bytes, shorter than its header")
    magic, length, crc = _SNAP_HEADER.unpack_from(data)
    if magic != SNAP_MAGIC:
        raise Malformed("bad magic (not a snapshot file)")
    payload = data[_SNAP_HEADER.size :]
    if len(payload) != length:
        raise Malformed(f"payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != crc:
        raise Malformed("CRC mismatch")
    obj = unpack(payload)
    if (
        not isinstance(obj, list)
        or len(obj) != 5
        or not isinstance(obj[0], int)
        or not isinstance(obj[1], int)
        or not isinstance(obj[2], list)
        or not isinstance(obj[3], list)
        or not all(isinstance(v, str) for v in obj[2] + obj[3])
        or not isinstance(obj[4], bytes)
    ):
        raise Malformed("payload is not [index, term, voters, learners, data]")
    return Snapshot(obj[0], obj[1], tuple(obj[2]), tuple(obj[3]), obj[4])


# ----------------------------------------------------------------------------- reading


class SegmentReader:
    """Stream the records of one segment file with a bounded buffer.

    Iterating yields ``(offset, type, payload)`` for each good record, in order. It stops
    at the end of the file or at the first bad record; then :attr:`bad` is
    ``(offset, reason)`` and :attr:`good_end` is where the good records end. Memory use is
    one read chunk or one record, whichever is larger. ``OSError`` from the file passes
    through.
    """

    def __init__(self, f: ReadFile, size: int, chunk: int = 1 << 20) -> None:
        self._f = f
        self.size = size
        self._chunk = chunk
        self.good_end = 0
        self.bad: tuple[int, str] | None = None

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        f, size, chunk = self._f, self.size, self._chunk
        buf = b""
        pos = 0  # position in buf of file offset `offset`
        offset = 0
        while offset < size:
            left = size - offset
            if left < HEADER_SIZE:
                self.bad = (offset, f"partial header ({left} of {HEADER_SIZE} bytes)")
                return
            if len(buf) - pos < HEADER_SIZE:
                buf = buf[pos:] + f.read(max(chunk, HEADER_SIZE))
                pos = 0
                if len(buf) < HEADER_SIZE:
                    self.bad = (offset, "file shorter than its size while reading")
                    return
            length, crc, rtype = HEADER.unpack_from(buf, pos)
            if rtype not in _TYPES:
                self.bad = (offset, f"unknown record type {rtype}")
                return
            if length == 0:
                self.bad = (offset, "zero-length record")
                return
            if length > left - HEADER_SIZE:
                self.bad = (
                    offset,
                    f"partial payload (record of {length} bytes, "
                    f"{left - HEADER_SIZE} bytes left in file)",
                )
                return
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                need = end - len(buf)
                buf = buf[pos:] + f.read(max(chunk, need))
                end -= pos
                pos = 0
                if len(buf) < end:
                    self.bad = (offset, "file shorter than its size while reading")
                    return
            payload = buf[pos + HEADER_SIZE : end]
            if record_crc(length, rtype, payload) != crc:
                self.bad = (offset, "CRC mismatch")
                return
            yield offset, rtype, payload
            pos = end
            offset += HEADER_SIZE + length
            self.good_end = offset


def find_valid_record(f: ReadFile, start: int, end: int, window: int = 1 << 20) -> int | None:
    """The offset of the first well-formed record (known type, CRC matches) in
    ``[start, end)`` of ``f``, or ``None``.

    Used after a bad record at the end of the last segment to tell a torn write (nothing
    valid follows) from corruption in the middle of the log (a valid record follows).
    Reads ``window`` bytes at a time; a candidate whose payload crosses the window is read
    on its own.
    """
    pos = start
    while pos + HEADER_SIZE < end:
        f.seek(pos)
        buf = f.read(min(window + HEADER_SIZE, end - pos))
        limit = min(window, len(buf) - HEADER_SIZE)  # candidate starts in [0, limit)
        for m in _TYPE_BYTE_RE.finditer(buf, HEADER_SIZE - 1, limit + HEADER_SIZE - 1):
            p = m.start() - (HEADER_SIZE - 1)
            length, crc, rtype = HEADER.unpack_from(buf, p)
            at = pos + p
            if length == 0 or length > end - at - HEADER_SIZE:
                continue
            if p + HEADER_SIZE + length <= len(buf):
                payload = buf[p + HEADER_SIZE : p + HEADER_SIZE + length]
            else:
                f.seek(at + HEADER_SIZE)
                payload = f.read(length)
            if record_crc(length, rtype, payload) == crc:
                return at
        pos += max(limit, 1)
    return None


def read_u32(data: bytes, offset: int) -> int:
    """Little-endian u32 at ``offset`` (for tests and tools)."""
    value: int = _U32.unpack_from(data, offset)[0]
    return value
