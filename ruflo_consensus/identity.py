"""Node identity: Ed25519 key files, signed manifests, signed envelopes, a replay window.

Every node of a cluster has an Ed25519 key pair (pynacl). ``ruflo-consensus keygen --id N``
writes two files:

* ``N.key`` — the secret key, mode ``0600``. :func:`load_key_file` refuses a key file that
  anyone but its owner can read (:class:`InsecureKeyFile`).
* ``N.manifest.json`` — the node id and public key, signed by the key itself. Peers load
  each other's manifests (never each other's secret keys) with :func:`load_manifest`.

Every frame between nodes is an :class:`Envelope`: sender, destination, a nonce, a
timestamp, a payload kind and the payload, signed end to end by the sender. Relays forward
the envelope's signed bytes unchanged; any change to any field breaks the signature. The
one field outside the signature is the frame's *hop budget* (how many more relays may
carry it), which each relay lowers by one: it stops a frame that routing sends round in
circles, and is no security boundary (a relay could reset it, or drop the frame anyway).

A :class:`ReplayWindow` rejects an envelope whose nonce was seen before or whose timestamp
is too far from the receiver's clock. Nonces are a random 8-byte boot id and an 8-byte
counter, so the window keeps a bounded bitmap per (sender, boot) instead of every nonce.

All rejections are :class:`EnvelopeError` subclasses with a short ``reason`` (the counter
key drivers use): ``too-large``, ``malformed``, ``unknown-sender``, ``bad-signature``,
``wrong-destination``, ``replayed``, ``stale``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64

__all__ = [
    "DEFAULT_HOPS",
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_ENVELOPE",
    "BadEnvelopeSignature",
    "Envelope",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "IdentityError",
    "InsecureKeyFile",
    "MalformedEnvelope",
    "NodeIdentity",
    "NonceSource",
    "ReplayWindow",
    "ReplayedEnvelope",
    "StaleEnvelope",
    "UnknownSender",
    "WrongDestination",
    "check_node_id",
    "keygen",
    "load_key_file",
    "load_manifest",
    "manifest_path",
    "open_envelope",
    "parse_frame",
    "reframe",
    "seal",
]

ENVELOPE_VERSION = 1
DEFAULT_HOPS = 16
"""The hop budget of a frame that does not carry one."""
MAX_HOPS = 255
DEFAULT_MAX_ENVELOPE = 1 << 20  # 1 MiB, the same limit as a protocol frame
DEFAULT_MAX_AGE_S = 30.0
_KEY_KIND = "ruflo-consensus-key"
_MANIFEST_KIND = "ruflo-node-manifest"


# ----------------------------------------------------------------------------- errors


class IdentityError(Exception):
    """A key file or manifest is missing, malformed, unsafe or does not verify."""


class InsecureKeyFile(IdentityError):
    """A secret key file is readable or writable by someone other than its owner."""


class EnvelopeError(ValueError):
    """An envelope was rejected; ``reason`` is the counter key for the kind of rejection."""

    reason = "malformed"


class EnvelopeTooLarge(EnvelopeError):
    """The frame is over the size limit; nothing of it was decoded."""

    reason = "too-large"


class MalformedEnvelope(EnvelopeError):
    """Not an envelope: bad msgpack, wrong shape, wrong field types or version."""

    reason = "malformed"


class UnknownSender(EnvelopeError):
    """The sender is not a node whose public key we hold."""

    reason = "unknown-sender"


class BadEnvelopeSignature(EnvelopeError):
    """The signature does not verify under the sender's key (forged or tampered)."""

    reason = "bad-signature"


class WrongDestination(EnvelopeError):
    """The envelope is addressed to another node and was not meant to be relayed here."""

    reason = "wrong-destination"


class ReplayedEnvelope(EnvelopeError):
    """The nonce was seen before (or is older than the window can tell apart)."""

    reason = "replayed"


class StaleEnvelope(EnvelopeError):
    """The timestamp is further from the receiver's clock than the allowed age."""

    reason = "stale"


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class NodeIdentity:
    """A node id and its Ed25519 signing key."""

    node_id: str
    signing_key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def generate(cls, node_id: str, seed: bytes | None = None) -> NodeIdentity:
        """A fresh identity; ``seed`` (32 bytes) makes the key reproducible (tests)."""
        if not node_id:
            raise IdentityError("a node id must not be empty")
        key = (
            nacl.signing.SigningKey(seed)
            if seed is not None
            else nacl.signing.SigningKey.generate()
        )
        return cls(node_id, key)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self.signing_key.verify_key)

    def manifest(self) -> dict[str, Any]:
        """The signed manifest peers load: ``{"manifest": {...}, "signature": hex}``."""
        body = {
            "kind": _MANIFEST_KIND,
            "node_id": self.node_id,
            "public_key": self.public_key.hex(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        signature = self.signing_key.sign(_manifest_bytes(body)).signature
        return {"manifest": body, "signature": bytes(signature).hex()}


def _manifest_bytes(body: dict[str, Any]) -> bytes:
    """What a manifest's signature covers: its JSON with sorted keys and no spaces.

    (Not :mod:`ruflo_consensus.canonical`'s msgpack form: a manifest holds only strings,
    is read by people and other tools as JSON, and every key file written so far was
    signed over this form.)
    """
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_path(key_file: str | Path) -> Path:
    """Where the manifest of a key file lives: ``keys/n1.key`` → ``keys/n1.manifest.json``."""
    p = Path(key_file)
    return p.with_name(p.stem + ".manifest.json")


_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` if it can name a node or client; else raise :class:`IdentityError`.

    An id becomes a file name (its key file, its data folder), so it is 1-128 letters,
    digits, ``.``, ``_`` or ``-``, starting with a letter or digit: no ``/``, no ``..``.
    """
    if not isinstance(node_id, str) or _NODE_ID.fullmatch(node_id) is None:
        raise IdentityError(
            f"bad node id {node_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return node_id


def keygen(node_id: str, key_file: str | Path, *, overwrite: bool = False) -> NodeIdentity:
    """Write a new key file (mode 0600) and its signed manifest; return the identity.

    Refuses (:class:`IdentityError`) an id :func:`check_node_id` refuses, and to replace
    an existing key file unless ``overwrite``.
    The key file is created with ``O_EXCL`` and mode 0600 from the start, so the secret is
    never readable by others, not even for a moment.
    """
    check_node_id(node_id)
    path = Path(key_file)
    if path.exists() and not overwrite:
        raise IdentityError(f"{path}: a key file already exists (use --force to replace it)")
    identity = NodeIdentity.generate(node_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(
        {
            "kind": _KEY_KIND,
            "node_id": node_id,
            "secret_key": bytes(identity.signing_key).hex(),
            "public_key": identity.public_key.hex(),
        },
        indent=2,
    ).encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but be explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    manifest_path(path).write_text(json.dumps(identity.manifest(), indent=2) + "\n")
    return identity


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{path}: the {what} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise IdentityError(f"{path}: the {what} must be a JSON object")
    return raw


def _hex(raw: dict[str, Any], name: str, size: int, path: Path) -> bytes:
    value = raw.get(name)
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        data = b""
    if len(data) != size:
        raise IdentityError(f"{path}: {name} must be {size} bytes of hex")
    return data


def load_key_file(path: str | Path, node_id: str | None = None) -> NodeIdentity:
    """Load a key file written by :func:`keygen`.

    Raises :class:`InsecureKeyFile` when group or others may read or write it, and
    :class:`IdentityError` when it is missing, malformed, inconsistent, or (with
    ``node_id``) belongs to another node.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise IdentityError(f"{p}: cannot read the key file: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFile(
            f"{p}: key file has mode {stat.S_IMODE(mode):04o}; it must not be accessible by "
            f"group or others (chmod 600 {p})"
        )
    raw = _read_json(p, "key file")
    if raw.get("kind") != _KEY_KIND or not isinstance(raw.get("node_id"), str):
        raise IdentityError(f"{p}: not a ruflo-consensus key file")
    seed = _hex(raw, "secret_key", 32, p)
    identity = NodeIdentity.generate(raw["node_id"], seed)
    if identity.public_key != _hex(raw, "public_key", PUBLIC_KEY_LEN, p):
        raise IdentityError(f"{p}: public_key does not match secret_key")
    if node_id is not None and identity.node_id != node_id:
        raise IdentityError(f"{p}: key file is for {identity.node_id!r}, not {node_id!r}")
    return identity


def load_manifest(path: str | Path, node_id: str | None = None) -> tuple[str, bytes]:
    """Load and verify a signed manifest; return ``(node_id, public_key)``.

    The manifest must be signed by the key it names; with ``node_id`` it must also name
    that node. Anything else is an :class:`IdentityError`.
    """
    p = Path(path)
    raw = _read_json(p, "manifest")
    body = raw.get("manifest")
    if not isinstance(body, dict) or body.get("kind") != _MANIFEST_KIND:
        raise IdentityError(f"{p}: not a ruflo-consensus node manifest")
    nid = body.get("node_id")
    if not isinstance(nid, str) or not nid:
        raise IdentityError(f"{p}: manifest has no node_id")
    public_key = _hex(body, "public_key", PUBLIC_KEY_LEN, p)
    signature = _hex(raw, "signature", SIGNATURE_LEN, p)
    try:
        nacl.signing.VerifyKey(public_key).verify(_manifest_bytes(body), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise IdentityError(f"{p}: manifest signature does not verify") from None
    if node_id is not None and nid != node_id:
        raise IdentityError(f"{p}: manifest is for {nid!r}, not {node_id!r}")
    return nid, public_key


# ----------------------------------------------------------------------------- envelopes


class NonceSource:
    """Unique nonces for one process lifetime: a random 8-byte boot id + an 8-byte counter."""

    def __init__(self, boot: bytes | None = None) -> None:
        self.boot = boot if boot is not None else secrets.token_bytes(8)
        if len(self.boot) != 8:
            raise ValueError("boot id must be 8 bytes")
        self.counter = 0

    def next(self) -> bytes:
        """The next nonce (16 bytes)."""
        self.counter += 1
        return self.boot + self.counter.to_bytes(8, "big")

    @property
    def last(self) -> bytes | None:
        """The nonce :meth:`next` returned last (None before the first)."""
        return self.boot + self.counter.to_bytes(8, "big") if self.counter else None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: who sent it, to whom, when, and what it carries."""

    sender: str
    dst: str
    nonce: bytes
    timestamp_ms: int
    kind: int
    payload: bytes


def _now_ms() -> int:
    return int(time.time() * 1000)


def seal(
    identity: NodeIdentity,
    dst: str,
    kind: int,
    payload: bytes,
    nonces: NonceSource,
    now_ms: int | None = None,
    *,
    hops: int | None = None,
) -> bytes:
    """Sign ``payload`` for ``dst`` and return the frame bytes.

    The frame is the msgpack array ``[body, signature]`` where ``body`` is the msgpack
    encoding of ``[version, sender, dst, nonce, timestamp_ms, kind, payload]`` and the
    signature covers ``body`` exactly, so no field can change in transit. With ``hops``
    the frame is ``[body, signature, hops]``: at most ``hops`` relays may carry it
    (without, :data:`DEFAULT_HOPS`).
    """
    ts = _now_ms() if now_ms is None else now_ms
    body = msgpack.packb(
        [ENVELOPE_VERSION, identity.node_id, dst, nonces.next(), ts, kind, payload],
        use_bin_type=True,
    )
    signature = bytes(identity.signing_key.sign(body).signature)
    if hops is None:
        return msgpack.packb([body, signature], use_bin_type=True)  # type: ignore[no-any-return]
    return reframe(body, signature, hops)


def reframe(body: bytes, signature: bytes, hops: int) -> bytes:
    """The frame of an already signed ``body`` with a new hop budget (what a relay sends)."""
    if not 0 <= hops <= MAX_HOPS:
        raise ValueError(f"hops must be between 0 and {MAX_HOPS}")
    return msgpack.packb([body, signature, hops], use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, limit: int) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=16,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several kinds on hostile input
        raise MalformedEnvelope(f"not a msgpack envelope: {type(exc).__name__}") from None


def parse_envelope(
    data: bytes, max_size: int = DEFAULT_MAX_ENVELOPE
) -> tuple[Envelope, bytes, bytes]:
    """Check the size, then decode the frame's header; return ``(envelope, body, signature)``.

    Nothing is verified yet (see :func:`open_envelope`). Raises :class:`EnvelopeTooLarge`
    before parsing anything when the frame is over ``max_size``.
    """
    envelope, body, signature, _hops = parse_frame(data, max_size)
    return envelope, body, signature


def parse_frame(
    data: bytes, max_size: int = DEFAULT_MAX_ENVELOPE
) -> tuple[Envelope, bytes, bytes, int]:
    """:func:`parse_envelope`, and the frame's hop budget (:data:`DEFAULT_HOPS` if none)."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedEnvelope(f"a frame is bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise EnvelopeTooLarge(f"frame of {len(data)} bytes is over the {max_size}-byte limit")
    outer = _unpack(bytes(data), max_size)
    if (
        not isinstance(outer, list)
        or len(outer) not in (2, 3)
        or not isinstance(outer[0], bytes)
        or not isinstance(outer[1], bytes)
    ):
        raise MalformedEnvelope("an envelope is [body, signature] or [body, signature, hops]")
    hops = DEFAULT_HOPS
    if len(outer) == 3:
        hops = outer[2]
        if type(hops) is not int or not 0 <= hops <= MAX_HOPS:
            raise MalformedEnvelope(f"hops must be an integer between 0 and {MAX_HOPS}")
    body, signature = outer[0], outer[1]
    if len(signature) != SIGNATURE_LEN:
        raise MalformedEnvelope(f"signature must be {SIGNATURE_LEN} bytes")
    fields = _unpack(body, max_size)
    if not isinstance(fields, list) or len(fields) != 7:
        raise MalformedEnvelope("envelope body must have 7 fields")
    version, sender, dst, nonce, ts, kind, payload = fields
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise MalformedEnvelope(f"unknown envelope version {version!r:.20}")
    if not (isinstance(sender, str) and sender and len(sender) <= 256):
        raise MalformedEnvelope("sender must be a non-empty string")
    if not (isinstance(dst, str) and dst and len(dst) <= 256):
        raise MalformedEnvelope("dst must be a non-empty string")
    if not isinstance(nonce, bytes) or len(nonce) != 16:
        raise MalformedEnvelope("nonce must be 16 bytes")
    if type(ts) is not int or ts < 0 or type(kind) is not int or kind < 0:
        raise MalformedEnvelope("timestamp and kind must be non-negative integers")
    if not isinstance(payload, bytes):
        raise MalformedEnvelope("payload must be bytes")
    return Envelope(sender, dst, nonce, ts, kind, payload), body, signature, hops


def verify_envelope(
    envelope: Envelope, body: bytes, signature: bytes, keys: dict[str, bytes]
) -> None:
    """Raise :class:`UnknownSender` or :class:`BadEnvelopeSignature` unless it verifies."""
    key = keys.get(envelope.sender)
    if key is None:
        raise UnknownSender(f"{envelope.sender!r:.60} is not a known node")
    try:
        nacl.signing.VerifyKey(key).verify(body, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise BadEnvelopeSignature(f"signature of {envelope.sender!r} does not verify") from None


def open_envelope(
    data: bytes,
    keys: dict[str, bytes],
    window: ReplayWindow,
    *,
    me: str,
    max_size: int = DEFAULT_MAX_ENVELOPE,
    now_ms: int | None = None,
) -> Envelope:
    """Size check, decode, verify the signature, check destination and replay window.

    This is what a node does with a frame addressed to itself; the window only remembers
    the nonce once everything else passed, so a forged frame cannot burn a real nonce.
    """
    envelope, body, signature = parse_envelope(data, max_size)
    verify_envelope(envelope, body, signature, keys)
    if envelope.dst != me:
        raise WrongDestination(f"envelope for {envelope.dst!r} reached {me!r}")
    window.check(envelope.sender, envelope.nonce, envelope.timestamp_ms, now_ms)
    return envelope


@dataclass(slots=True)
class _Track:
    high: int = 0
    bits: int = 0  # bit k set: counter (high - k) was seen
    last_ms: int = 0


class ReplayWindow:
    """Rejects a replayed nonce or a stale timestamp, in bounded memory.

    A timestamp more than ``max_age_s`` from the receiver's clock (either way) is
    :class:`StaleEnvelope`. Within the age limit, each (sender, boot id) keeps the highest
    counter seen and a ``width``-bit map of the counters below it: a counter already seen,
    or more than ``width`` below the highest, is :class:`ReplayedEnvelope`. A boot id not
    heard from for twice the age limit is forgotten — its frames are stale by then anyway.
    """

    def __init__(self, max_age_s: float = DEFAULT_MAX_AGE_S, width: int = 4096) -> None:
        if max_age_s <= 0 or width < 1:
            raise ValueError("max_age_s and width must be positive")
        self.max_age_ms = int(max_age_s * 1000)
        self.width = width
        self._tracks: dict[tuple[str, bytes], _Track] = {}
        self._last_prune = 0

    def check(
        self, sender: str, nonce: bytes, timestamp_ms: int, now_ms: int | None = None
    ) -> None:
        """Accept and remember the nonce, or raise; a rejected nonce is not remembered."""
        now = _now_ms() if now_ms is None else now_ms
        if abs(now - timestamp_ms) > self.max_age_ms:
            raise StaleEnvelope(
                f"timestamp is {(now - timestamp_ms) / 1000:+.1f} s from this node's clock "
                f"(limit ±{self.max_age_ms / 1000:g} s)"
            )
        if len(nonce) != 16:
            raise ReplayedEnvelope("nonce must be 16 bytes")
        boot, counter = nonce[:8], int.from_bytes(nonce[8:], "big")
        track = self._tracks.get((sender, boot))
        if track is None:
            track = self._tracks[(sender, boot)] = _Track()
        if counter > track.high:
            shift = counter - track.high
            if shift >= self.width:
                track.bits = 1
            else:
                track.bits = ((track.bits << shift) | 1) & ((1 << self.width) - 1)
            track.high = counter
        else:
            offset = track.high - counter
            if offset >= self.width:
                raise ReplayedEnvelope(f"nonce {counter} is older than the replay window")
            if track.bits >> offset & 1:
                raise ReplayedEnvelope(f"nonce {counter} from {sender!r} was seen before")
            track.bits |= 1 << offset
        track.last_ms = now
        if now - self._last_prune > self.max_age_ms:
            self._prune(now)

    def _prune(self, now: int) -> None:
        self._last_prune = now
        horizon = now - 2 * self.max_age_ms
        for key in [k for k, t in self._tracks.items() if t.last_ms < horizon]:
            del self._tracks[key]

    def __len__(self) -> int:
        """How many (sender, boot) tracks are held."""
        return len(self._tracks)
