"""PBFT messages: signed canonical-msgpack envelopes, their payloads, digests and frames.

A message is a :class:`Signed` envelope: ``body`` is the canonical msgpack encoding of
``[kind, signer, field, ...]`` and ``sig`` the signer's Ed25519 signature of ``body``.
Certificates (prepared certificates in a view change, checkpoint proofs, the view-change
messages a new-view carries) are lists of other replicas' envelopes, nested as
``[body, sig]`` pairs: a replica can relay them, never forge them.

On the network, envelopes travel in a :class:`PbftFrame` (one or more per frame). The
frame itself is not signed; every envelope in it is, and counts as a message from its
*signer*, whoever relayed it.

:func:`open_envelope` is the only way in: it decodes the body (size and type limits,
canonical form), looks the signer up in the :class:`~.auth.Keyring`, verifies the
signature and returns a typed payload — or raises :class:`~..base.ProtocolError` with a
short ``reason`` and changes nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ...canonical import normalize
from ..base import Message, ProtocolError
from .auth import Keyring, Signer, verify

__all__ = [
    "CHECKPOINT",
    "COMMIT",
    "COMMIT_CERT",
    "FETCH_STATE",
    "NEW_VIEW",
    "PREPARE",
    "PRE_PREPARE",
    "READ",
    "READ_REPLY",
    "REPLY",
    "REQUEST",
    "STATE",
    "STATUS",
    "VIEW_CHANGE",
    "Checkpoint",
    "CommitCert",
    "FetchState",
    "NewView",
    "PbftFrame",
    "PrePrepare",
    "PreparedCert",
    "ReadReply",
    "ReadRequest",
    "Reply",
    "Request",
    "Signed",
    "State",
    "Status",
    "ViewChange",
    "Vote",
    "batch_digest",
    "decode_frame",
    "encode_frame",
    "open_envelope",
    "seal",
]

REQUEST, PRE_PREPARE, PREPARE, COMMIT, REPLY, CHECKPOINT = 1, 2, 3, 4, 5, 6
VIEW_CHANGE, NEW_VIEW, STATUS, FETCH_STATE, STATE, COMMIT_CERT = 7, 8, 9, 10, 11, 12
READ, READ_REPLY = 13, 14
KIND_NAMES = {
    REQUEST: "request",
    PRE_PREPARE: "pre-prepare",
    PREPARE: "prepare",
    COMMIT: "commit",
    REPLY: "reply",
    CHECKPOINT: "checkpoint",
    VIEW_CHANGE: "view-change",
    NEW_VIEW: "new-view",
    STATUS: "status",
    FETCH_STATE: "fetch-state",
    STATE: "state",
    COMMIT_CERT: "commit-cert",
    READ: "read",
    READ_REPLY: "read-reply",
}

MAX_BODY = 4 << 20
MAX_NAME = 256
SIG_LEN = 64
DIGEST_LEN = 32
_DECODE_CACHE_LIMIT = 1 << 17
_decoded: dict[bytes, Any] = {}


@dataclass(frozen=True, slots=True)
class Signed:
    """One signed message: canonical msgpack ``body`` and the signer's Ed25519 ``sig``."""

    body: bytes
    sig: bytes

    def wire(self) -> list[bytes]:
        """The ``[body, sig]`` pair that nests inside other messages."""
        return [self.body, self.sig]


@dataclass(frozen=True, slots=True)
class PbftFrame(Message):
    """What travels between nodes (and to clients): one or more signed envelopes."""

    items: tuple[Signed, ...]


# ------------------------------------------------------------------ payloads


@dataclass(frozen=True, slots=True)
class Request:
    """``<REQUEST, o, t, c>``: client ``signer`` asks for operation ``op``, timestamp ``t``."""

    signer: str
    t: int
    op: Any
    digest: bytes


@dataclass(frozen=True, slots=True)
class PrePrepare:
    """The primary of ``view`` assigns sequence number ``seq`` to the batch ``requests``."""

    signer: str
    view: int
    seq: int
    digest: bytes
    requests: tuple[Signed, ...]


@dataclass(frozen=True, slots=True)
class Vote:
    """A PREPARE or COMMIT for ``(view, seq, digest)``; ``kind`` says which."""

    kind: int
    signer: str
    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A replica's answer to client request ``(client, t)``, executed in ``view``.

    ``result`` is ``["ok", value]`` or ``["rejected", code, message]``.
    """

    signer: str
    view: int
    client: str
    t: int
    result: Any


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``signer``'s state after executing ``seq`` hashes to ``state_digest``."""

    signer: str
    seq: int
    state_digest: bytes


@dataclass(frozen=True, slots=True)
class PreparedCert:
    """A pre-prepare and the 2f prepares from other backups that prepared it."""

    pre_prepare: Signed
    prepares: tuple[Signed, ...]


@dataclass(frozen=True, slots=True)
class ViewChange:
    """``signer`` moves to ``view``: its stable checkpoint with proof, its prepared certs."""

    signer: str
    view: int
    stable_seq: int
    stable_digest: bytes
    proof: tuple[Signed, ...]
    prepared: tuple[PreparedCert, ...]


@dataclass(frozen=True, slots=True)
class NewView:
    """The primary of ``view`` starts it: 2f+1 view changes and the pre-prepares they imply."""

    signer: str
    view: int
    view_changes: tuple[Signed, ...]
    pre_prepares: tuple[Signed, ...]


@dataclass(frozen=True, slots=True)
class Status:
    """Periodic: where ``signer`` is (view, executed, stable checkpoint, changing view)."""

    signer: str
    view: int
    executed: int
    stable_seq: int
    changing: bool


@dataclass(frozen=True, slots=True)
class FetchState:
    """``signer`` asks for the state of the stable checkpoint at ``seq`` (or a later one)."""

    signer: str
    seq: int


@dataclass(frozen=True, slots=True)
class State:
    """A state snapshot at checkpoint ``seq`` and the 2f+1 checkpoint messages that prove it."""

    signer: str
    seq: int
    snapshot: bytes
    proof: tuple[Signed, ...]


@dataclass(frozen=True, slots=True)
class CommitCert:
    """Relayed proof that ``seq`` committed: a pre-prepare and 2f+1 matching commits."""

    signer: str
    seq: int
    pre_prepare: Signed
    commits: tuple[Signed, ...]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """The read-only fast path: client ``signer`` asks every replica to run ``op`` now."""

    signer: str
    t: int
    op: Any


@dataclass(frozen=True, slots=True)
class ReadReply:
    """A replica's answer to a fast read: ``result`` in its state after executing ``seq``."""

    signer: str
    view: int
    client: str
    t: int
    seq: int
    result: Any


Payload = (
    Request
    | ReadRequest
    | ReadReply
    | PrePrepare
    | Vote
    | Reply
    | Checkpoint
    | ViewChange
    | NewView
    | Status
    | FetchState
    | State
    | CommitCert
)


# ------------------------------------------------------------------ digests


def request_digest(body: bytes) -> bytes:
    """The digest that identifies a client request: SHA-256 of its signed body."""
    return hashlib.sha256(body).digest()


def batch_digest(request_bodies: Sequence[bytes]) -> bytes:
    """The digest of a batch: SHA-256 over the digests of its requests, in order.

    The empty batch is PBFT's *null request*, which view changes use to fill gaps.
    """
    h = hashlib.sha256(b"ruflo-pbft-batch")
    for body in request_bodies:
        h.update(hashlib.sha256(body).digest())
    return h.digest()


NULL_DIGEST = batch_digest(())


def state_digest(snapshot: bytes) -> bytes:
    """The digest of a state snapshot, as checkpoints carry it."""
    return hashlib.sha256(b"ruflo-pbft-state" + snapshot).digest()


# ------------------------------------------------------------------ sealing


def seal(signer: Signer, kind: int, *fields: Any) -> Signed:
    """Encode ``[kind, signer.name, *fields]`` canonically and sign it.

    Nested envelopes are passed as :class:`Signed` and become ``[body, sig]`` pairs.
    """
    wire = [kind, signer.name, *(_to_wire(f) for f in fields)]
    if not _canonical_shape(wire):
        wire = normalize(wire)  # maps in key order, -0.0 as 0.0; raises on what cannot be
    body: bytes = msgpack.packb(wire, use_bin_type=True)
    return Signed(body, signer.sign(body))


def _to_wire(value: Any) -> Any:
    if isinstance(value, Signed):
        return value.wire()
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    return value


def sign_request(signer: Signer, t: int, op: Any, read_only: bool = False) -> Signed:
    """A client's signed request ``op`` with timestamp ``t`` (raises on a non-canonical op).

    ``read_only=True`` makes a READ for the fast path instead of an ordered REQUEST.
    """
    return seal(signer, READ if read_only else REQUEST, t, normalize(op))


# ------------------------------------------------------------------ opening


def _bad(detail: str) -> ProtocolError:
    return ProtocolError("bad-field", detail)


def _int(v: Any, name: str, minimum: int = 0) -> int:
    if type(v) is not int or v < minimum:
        raise _bad(f"{name} must be an integer >= {minimum}")
    return v


def _name(v: Any, name: str) -> str:
    if type(v) is not str or not v or len(v) > MAX_NAME:
        raise _bad(f"{name} must be a non-empty string of at most {MAX_NAME} characters")
    return v


def _digest(v: Any, name: str = "digest") -> bytes:
    if type(v) is not bytes or len(v) != DIGEST_LEN:
        raise _bad(f"{name} must be {DIGEST_LEN} bytes")
    return v


def _env(v: Any) -> Signed:
    if (
        type(v) is not list
        or len(v) != 2
        or type(v[0]) is not bytes
        or type(v[1]) is not bytes
        or len(v[1]) != SIG_LEN
    ):
        raise _bad("a nested envelope is [body, 64-byte signature]")
    return Signed(v[0], v[1])


def _envs(v: Any, name: str, limit: int = 1 << 16) -> tuple[Signed, ...]:
    if type(v) is not list or len(v) > limit:
        raise _bad(f"{name} must be a list of envelopes")
    return tuple(_env(x) for x in v)


def _arity(f: list[Any], n: int, what: str) -> None:
    if len(f) != n:
        raise _bad(f"{what} has {n} fields, got {len(f)}")


def _parse(kind: int, signer: str, f: list[Any], body: bytes) -> Payload:
    if kind == REQUEST:
        _arity(f, 2, "request")
        return Request(signer, _int(f[0], "timestamp", 1), f[1], request_digest(body))
    if kind == PRE_PREPARE:
        _arity(f, 4, "pre-prepare")
        return PrePrepare(
            signer,
            _int(f[0], "view"),
            _int(f[1], "seq", 1),
            _digest(f[2]),
            _envs(f[3], "requests"),
        )
    if kind in (PREPARE, COMMIT):
        _arity(f, 3, KIND_NAMES[kind])
        return Vote(kind, signer, _int(f[0], "view"), _int(f[1], "seq", 1), _digest(f[2]))
    if kind == REPLY:
        _arity(f, 4, "reply")
        result = f[3]
        if type(result) is not list or not result or result[0] not in ("ok", "rejected"):
            raise _bad("a reply result is ['ok', value] or ['rejected', code, message]")
        return Reply(signer, _int(f[0], "view"), _name(f[1], "client"), _int(f[2], "t", 1), result)
    if kind == CHECKPOINT:
        _arity(f, 2, "checkpoint")
        return Checkpoint(signer, _int(f[0], "seq", 1), _digest(f[1], "state digest"))
    if kind == VIEW_CHANGE:
        _arity(f, 5, "view-change")
        raw_certs = f[4]
        if type(raw_certs) is not list:
            raise _bad("prepared certificates must be a list")
        certs = []
        for c in raw_certs:
            if type(c) is not list or len(c) != 2:
                raise _bad("a prepared certificate is [pre-prepare, [prepares]]")
            certs.append(PreparedCert(_env(c[0]), _envs(c[1], "prepares")))
        return ViewChange(
            signer,
            _int(f[0], "view", 1),
            _int(f[1], "stable seq"),
            _digest(f[2], "stable digest"),
            _envs(f[3], "checkpoint proof"),
            tuple(certs),
        )
    if kind == NEW_VIEW:
        _arity(f, 3, "new-view")
        return NewView(
            signer, _int(f[0], "view", 1), _envs(f[1], "view changes"), _envs(f[2], "pre-prepares")
        )
    if kind == STATUS:
        _arity(f, 4, "status")
        if type(f[3]) is not bool:
            raise _bad("changing must be a boolean")
        return Status(
            signer, _int(f[0], "view"), _int(f[1], "executed"), _int(f[2], "stable seq"), f[3]
        )
    if kind == FETCH_STATE:
        _arity(f, 1, "fetch-state")
        return FetchState(signer, _int(f[0], "seq", 1))
    if kind == STATE:
        _arity(f, 3, "state")
        if type(f[1]) is not bytes:
            raise _bad("a snapshot is bytes")
        return State(signer, _int(f[0], "seq", 1), f[1], _envs(f[2], "checkpoint proof"))
    if kind == READ:
        _arity(f, 2, "read")
        return ReadRequest(signer, _int(f[0], "timestamp", 1), f[1])
    if kind == READ_REPLY:
        _arity(f, 5, "read-reply")
        result = f[4]
        if type(result) is not list or not result or result[0] not in ("ok", "rejected"):
            raise _bad("a reply result is ['ok', value] or ['rejected', code, message]")
        return ReadReply(
            signer,
            _int(f[0], "view"),
            _name(f[1], "client"),
            _int(f[2], "t", 1),
            _int(f[3], "seq"),
            result,
        )
    if kind == COMMIT_CERT:
        _arity(f, 3, "commit-cert")
        return CommitCert(signer, _int(f[0], "seq", 1), _env(f[1]), _envs(f[2], "commits"))
    raise ProtocolError("unknown-kind", f"message kind {kind!r:.20}")


def decode_body(body: bytes) -> Payload:
    """Decode and type-check a body (cached: decoding is a pure function of the bytes).

    Raises :class:`ProtocolError` (``malformed``, ``non-canonical``, ``unknown-kind``,
    ``bad-field``). The signature is *not* checked here: see :func:`open_envelope`.
    """
    cached = _decoded.get(body)
    if cached is not None:
        if isinstance(cached, ProtocolError):
            raise ProtocolError(cached.reason, cached.detail)
        return cached  # type: ignore[no-any-return]
    try:
        payload: Payload | ProtocolError = _decode_uncached(body)
    except ProtocolError as exc:
        payload = exc
    if len(_decoded) >= _DECODE_CACHE_LIMIT:
        _decoded.clear()
    _decoded[body] = payload
    if isinstance(payload, ProtocolError):
        raise ProtocolError(payload.reason, payload.detail)
    return payload


def _decode_uncached(body: bytes) -> Payload:
    if type(body) is not bytes or len(body) > MAX_BODY:
        raise ProtocolError("malformed", f"a body is bytes of at most {MAX_BODY}")
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several types on hostile input
        raise ProtocolError("malformed", f"not msgpack: {type(exc).__name__}") from None
    if type(raw) is not list or len(raw) < 2 or type(raw[0]) is not int:
        raise ProtocolError("malformed", "a body is [kind, signer, ...]")
    try:
        canonical = _canonical_shape(raw) and msgpack.packb(raw, use_bin_type=True) == body
    except (TypeError, ValueError):
        canonical = False
    if not canonical:
        raise ProtocolError("non-canonical", "the body is not in canonical msgpack form")
    return _parse(raw[0], _name(raw[1], "signer"), raw[2:], body)


def _canonical_shape(value: list[Any]) -> bool:
    """True when ``value`` is already in :func:`normalize`'s form (the common case, fast).

    That is: lists (no tuples), maps whose keys are strings in sorted order, no ``NaN`` and
    no ``-0.0``. Re-packing such a value gives the canonical bytes; anything else (other
    key types included) is left to :func:`normalize`.
    """
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is list:
            stack.extend(v)
        elif t is dict:
            keys = list(v)
            if any(type(k) is not str for k in keys) or keys != sorted(keys):
                return False
            stack.extend(v.values())
        elif t is float:
            if v != v or (v == 0.0 and math.copysign(1.0, v) < 0):
                return False
        elif t not in _PLAIN:
            return False
    return True


_PLAIN = frozenset({type(None), bool, int, str, bytes})


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError("malformed", f"msgpack ext type {code} is not allowed")


def open_envelope(env: Signed, keyring: Keyring) -> Payload:
    """Decode ``env``, check its signer is known and its signature verifies; return it typed.

    Requests are checked against the keyring's client keys, everything else against the
    replica keys. Raises :class:`ProtocolError`: ``malformed``, ``non-canonical``,
    ``unknown-kind``, ``bad-field``, ``unknown-sender``, ``unknown-client`` or
    ``bad-signature``.
    """
    if type(env) is not Signed or type(env.sig) is not bytes or len(env.sig) != SIG_LEN:
        raise ProtocolError("malformed", "an envelope is (body, 64-byte signature)")
    payload = decode_body(env.body)
    if type(payload) is Request or type(payload) is ReadRequest:
        key = keyring.client_key(payload.signer)
        if key is None:
            raise ProtocolError("unknown-client", f"no key for client {payload.signer!r:.40}")
    else:
        key = keyring.replica_key(payload.signer)
        if key is None:
            raise ProtocolError("unknown-sender", f"{payload.signer!r:.40} is not a replica")
    if not verify(key, env.body, env.sig):
        what = KIND_NAMES.get(_kind(payload))
        raise ProtocolError("bad-signature", f"{what} from {payload.signer}")
    return payload


def _kind(payload: Payload) -> int:
    if isinstance(payload, Vote):
        return payload.kind
    return _KIND_OF[type(payload)]


_KIND_OF: dict[type, int] = {
    Request: REQUEST,
    PrePrepare: PRE_PREPARE,
    Reply: REPLY,
    Checkpoint: CHECKPOINT,
    ViewChange: VIEW_CHANGE,
    NewView: NEW_VIEW,
    Status: STATUS,
    FetchState: FETCH_STATE,
    State: STATE,
    CommitCert: COMMIT_CERT,
    ReadRequest: READ,
    ReadReply: READ_REPLY,
}


# ------------------------------------------------------------------ frames on the wire

FRAME_VERSION = 1


def encode_frame(frame: PbftFrame) -> bytes:
    """The msgpack bytes of a frame: ``[version, "pbft", src, dst, [[body, sig], ...]]``."""
    return msgpack.packb(  # type: ignore[no-any-return]
        [FRAME_VERSION, "pbft", frame.src, frame.dst, [e.wire() for e in frame.items]],
        use_bin_type=True,
    )


def decode_frame(data: bytes, max_size: int = MAX_BODY) -> PbftFrame:
    """Decode a frame made by :func:`encode_frame`; raise ``ProtocolError("malformed")``.

    Only the framing is checked here; each envelope is checked by :func:`open_envelope`
    when the core steps the frame.
    """
    if not isinstance(data, bytes | bytearray) or len(data) > max_size:
        raise ProtocolError("malformed", f"a frame is bytes of at most {max_size}")
    try:
        raw = msgpack.unpackb(bytes(data), raw=False, ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError("malformed", f"not msgpack: {type(exc).__name__}") from None
    if (
        type(raw) is not list
        or len(raw) != 5
        or raw[0] != FRAME_VERSION
        or raw[1] != "pbft"
        or type(raw[4]) is not list
    ):
        raise ProtocolError("malformed", "a frame is [1, 'pbft', src, dst, [envelopes]]")
    return PbftFrame(_name(raw[2], "src"), _name(raw[3], "dst"), _envs(raw[4], "items"))
