"""msgpack wire format for protocol messages, with size/depth limits and typed errors.

A frame is a msgpack array ``[VERSION, TAG, src, dst, field...]``. Decoding never trusts
the input: the size is checked before anything is parsed, msgpack's own length limits are
set, nesting depth is bounded, and every field is type-checked. Anything wrong raises a
subclass of :class:`DecodeError` whose ``reason`` is a short counter key; no other
exception escapes :func:`decode_message`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from .core.base import ConfChange, ConfChangeKind, Entry, Message, Proposal
from .core.raft import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_FRAME",
    "DecodeError",
    "FieldError",
    "FrameTooLarge",
    "MalformedFrame",
    "UnknownMessageType",
    "decode_message",
    "encode_message",
]

VERSION = 1
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB
DEFAULT_MAX_DEPTH = 32


class DecodeError(ValueError):
    """A frame was rejected; ``reason`` names the kind (``too-large``, ``malformed``, …)."""

    reason = "malformed"


class FrameTooLarge(DecodeError):
    """The frame is over the size limit; it was not parsed."""

    reason = "too-large"


class MalformedFrame(DecodeError):
    """Not valid msgpack, truncated, too deep, or not a frame."""

    reason = "malformed"


class UnknownMessageType(DecodeError):
    """The frame's version or type tag is not one we know."""

    reason = "unknown-type"


class FieldError(DecodeError):
    """A field has the wrong type or an impossible value."""

    reason = "bad-field"


# ------------------------------------------------------------------ encoding


def _enc_entry(e: Entry) -> list[Any]:
    p = e.proposal
    out = [e.term, e.index, None if p is None else [p.client, p.seq, p.command]]
    c = e.conf
    if c is not None:  # a membership change: [kind, node, voters, learners] as a 4th field
        out.append([c.kind.value, c.node, list(c.voters), list(c.learners)])
    return out


_ENCODERS: dict[type[Message], tuple[int, Callable[[Any], list[Any]]]] = {
    RequestVote: (1, lambda m: [m.term, m.last_index, m.last_term, m.pre_vote, m.transfer]),
    VoteResponse: (2, lambda m: [m.term, m.granted, m.pre_vote]),
    AppendEntries: (
        3,
        lambda m: [
            m.term,
            m.prev_index,
            m.prev_term,
            [_enc_entry(e) for e in m.entries],
            m.commit,
            m.round,
        ],
    ),
    AppendResponse: (
        4,
        lambda m: [m.term, m.success, m.index, m.hint_index, m.hint_term, m.round],
    ),
    TimeoutNow: (5, lambda m: [m.term]),
    ReadIndexRequest: (6, lambda m: [m.term, m.ctx]),
    ReadIndexResponse: (7, lambda m: [m.term, m.ctx, m.index]),
    InstallSnapshot: (
        8,
        lambda m: [
            m.term,
            m.index,
            m.snap_term,
            list(m.voters),
            list(m.learners),
            m.offset,
            m.total,
            m.data,
            m.done,
        ],
    ),
    InstallSnapshotResponse: (9, lambda m: [m.term, m.index, m.received, m.done]),
}


def encode_message(message: Message) -> bytes:
    """Encode a protocol message as one msgpack frame."""
    try:
        tag, fields = _ENCODERS[type(message)]
    except KeyError:
        raise TypeError(f"no wire encoding for {type(message).__name__}") from None
    return msgpack.packb(  # type: ignore[no-any-return]
        [VERSION, tag, message.src, message.dst, *fields(message)], use_bin_type=True
    )


# ------------------------------------------------------------------ decoding


def _int(v: Any, name: str, minimum: int = 0) -> int:
    if type(v) is not int or v < minimum:
        raise FieldError(f"{name} must be an integer >= {minimum}, got {v!r:.40}")
    return v


def _bool(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise FieldError(f"{name} must be a boolean, got {v!r:.40}")
    return v


def _str(v: Any, name: str) -> str:
    if type(v) is not str or not v or len(v) > 256:
        raise FieldError(f"{name} must be a non-empty string of at most 256 characters")
    return v


def _bytes(v: Any, name: str) -> bytes:
    if type(v) is not bytes:
        raise FieldError(f"{name} must be bytes, got {type(v).__name__}")
    return v


def _node_ids(v: Any, name: str) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise FieldError(f"{name} must be a list of node ids")
    ids = tuple(_str(x, name) for x in v)
    if len(set(ids)) != len(ids):
        raise FieldError(f"{name} lists a node twice")
    return ids


_PLAIN = (type(None), bool, int, float, str, bytes)


def _check_depth(value: Any, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            raise MalformedFrame(f"nesting deeper than {limit}")
        if isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif not isinstance(v, _PLAIN):
            # msgpack decodes its timestamp extension itself, without the ext hook
            raise MalformedFrame(f"{type(v).__name__} values are not allowed in a frame")


_CONF_KINDS = {k.value: k for k in ConfChangeKind}


def _dec_conf(raw: Any) -> ConfChange:
    if not isinstance(raw, list) or len(raw) != 4:
        raise FieldError("configuration must be [kind, node, voters, learners]")
    kind = _CONF_KINDS.get(raw[0]) if type(raw[0]) is str else None
    if kind is None:
        raise FieldError(f"unknown configuration change kind {raw[0]!r:.40}")
    voters = _node_ids(raw[2], "voters")
    learners = _node_ids(raw[3], "learners")
    if not voters:
        raise FieldError("a configuration needs at least one voter")
    if set(voters) & set(learners):
        raise FieldError("a node cannot be both a voter and a learner")
    return ConfChange(kind, _str(raw[1], "conf node"), voters, learners)


def _dec_entry(raw: Any) -> Entry:
    if not isinstance(raw, list) or len(raw) not in (3, 4):
        raise FieldError("entry must be [term, index, proposal] or [term, index, None, conf]")
    term = _int(raw[0], "entry term", 1)
    index = _int(raw[1], "entry index", 1)
    p = raw[2]
    if len(raw) == 4:
        if p is not None:
            raise FieldError("an entry carries a proposal or a configuration, not both")
        return Entry(term, index, None, _dec_conf(raw[3]))
    if p is None:
        return Entry(term, index, None)
    if not isinstance(p, list) or len(p) != 3:
        raise FieldError("proposal must be [client, seq, command]")
    client = None if p[0] is None else _str(p[0], "client")
    return Entry(term, index, Proposal(client, _int(p[1], "seq"), p[2]))


def _fields(raw: list[Any], n: int, name: str, optional: int = 0) -> list[Any]:
    """Check the field count: ``n`` required, then up to ``optional`` more (older peers)."""
    if not n <= len(raw) <= n + optional:
        want = str(n) if not optional else f"{n}..{n + optional}"
        raise FieldError(f"{name} needs {want} fields, got {len(raw)}")
    return raw


def _entries(v: Any, name: str) -> tuple[Entry, ...]:
    if not isinstance(v, list):
        raise FieldError(f"{name} must be a list")
    return tuple(_dec_entry(e) for e in v)


def _read_point(v: Any, name: str) -> int:
    return _int(v, name, minimum=-1)  # -1: the leader refused


_Check = Callable[[Any, str], Any]


def _decoder(
    cls: type[Message],
    required: tuple[tuple[str, _Check], ...],
    optional: tuple[tuple[str, _Check, Any], ...] = (),
) -> Callable[[str, str, list[Any]], Message]:
    """A decoder of ``cls``: its fields checked in order, then the optional trailing ones.

    Older peers do not send the optional fields; a missing one takes its default.
    """
    name, n = cls.__name__, len(required)
    checks = required + tuple((field, check) for field, check, _ in optional)
    defaults = tuple(default for _, _, default in optional)

    def decode(src: str, dst: str, f: list[Any]) -> Message:
        f = _fields(f, n, name, optional=len(defaults))
        values = [check(v, field) for (field, check), v in zip(checks, f, strict=False)]
        return cls(src, dst, *values, *defaults[len(f) - n :])

    return decode


_DECODERS: dict[int, Callable[[str, str, list[Any]], Message]] = {
    1: _decoder(
        RequestVote,
        (("term", _int), ("last_index", _int), ("last_term", _int), ("pre_vote", _bool)),
        (("transfer", _bool, False),),
    ),
    2: _decoder(VoteResponse, (("term", _int), ("granted", _bool), ("pre_vote", _bool))),
    3: _decoder(
        AppendEntries,
        (
            ("term", _int),
            ("prev_index", _int),
            ("prev_term", _int),
            ("entries", _entries),
            ("commit", _int),
        ),
        (("round", _int, 0),),
    ),
    4: _decoder(
        AppendResponse,
        (
            ("term", _int),
            ("success", _bool),
            ("index", _int),
            ("hint_index", _int),
            ("hint_term", _int),
        ),
        (("round", _int, 0),),
    ),
    5: _decoder(TimeoutNow, (("term", _int),)),
    6: _decoder(ReadIndexRequest, (("term", _int), ("ctx", _int))),
    7: _decoder(ReadIndexResponse, (("term", _int), ("ctx", _int), ("index", _read_point))),
    8: _decoder(
        InstallSnapshot,
        (
            ("term", _int),
            ("index", _int),
            ("snap_term", _int),
            ("voters", _node_ids),
            ("learners", _node_ids),
            ("offset", _int),
            ("total", _int),
            ("data", _bytes),
            ("done", _bool),
        ),
    ),
    9: _decoder(
        InstallSnapshotResponse,
        (("term", _int), ("index", _int), ("received", _int), ("done", _bool)),
    ),
}


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"msgpack ext type {code} is not allowed in a frame")


def decode_message(
    data: bytes, max_size: int = DEFAULT_MAX_FRAME, max_depth: int = DEFAULT_MAX_DEPTH
) -> Message:
    """Decode one frame; raise a :class:`DecodeError` subclass for anything invalid."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedFrame(f"a frame is bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise FrameTooLarge(f"frame of {len(data)} bytes is over the {max_size}-byte limit")
    try:
        raw = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            # every element takes at least one byte, so these never refuse a frame that
            # fits in max_size; they stop a tiny header from announcing a huge container
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size // 2,
            max_ext_len=max_size,
            ext_hook=_refuse_ext,
        )
    except MalformedFrame:
        raise
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise MalformedFrame(f"not a msgpack frame: {exc}") from None
    except Exception as exc:  # msgpack raises a few others on hostile input
        raise MalformedFrame(f"not a msgpack frame: {type(exc).__name__}") from None
    if not isinstance(raw, list) or len(raw) < 4:
        raise MalformedFrame("a frame is an array [version, tag, src, dst, ...]")
    _check_depth(raw, max_depth)
    if raw[0] != VERSION or type(raw[0]) is not int:
        raise UnknownMessageType(f"unknown frame version {raw[0]!r:.20}")
    decoder = _DECODERS.get(raw[1]) if type(raw[1]) is int else None
    if decoder is None:
        raise UnknownMessageType(f"unknown message tag {raw[1]!r:.20}")
    return decoder(_str(raw[2], "src"), _str(raw[3], "dst"), raw[4:])
