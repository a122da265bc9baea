"""Ed25519 authentication of PBFT messages (pynacl), with a verification cache.

Every PBFT message is a :class:`~.messages.Signed` envelope: canonical msgpack bytes and
a detached 64-byte Ed25519 signature by the sender. A replica verifies the signature with
the sender's public key from its :class:`Keyring` *before* the message counts for
anything.

Verification is a pure function of ``(public key, bytes, signature)``, so its result can
be cached: the same envelope reaches a replica many times (retransmissions, relayed
certificates inside view-change and new-view messages) and, inside the simulator, every
replica of the cluster checks the very same broadcast bytes. :func:`verify` keeps a
bounded cache of verified triples; a hit costs a dictionary lookup instead of ~100 µs.
libsodium, and therefore pynacl, has no batch Ed25519 verification, so the cache is the
only batching there is (``docs/pbft.md`` and ``docs/benchmarks.md`` give the costs).

Signature checks can be switched off **only** by :func:`unsafe_skip_signature_checks_for_tests`,
a context manager meant for the test that proves the checks matter. It is not a setting
of :class:`~.replica.PbftConfig` or of the CLI, so it cannot be left on by accident in a
deployment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ..base import NodeId

__all__ = [
    "AuthStats",
    "Keyring",
    "Signer",
    "auth_stats",
    "clear_verify_cache",
    "derive_signing_key",
    "unsafe_skip_signature_checks_for_tests",
    "verify",
]

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
_CACHE_LIMIT = 1 << 18

_skip_checks_for_tests = False
_verified: dict[tuple[bytes, bytes, bytes], bool] = {}
_verify_keys: dict[bytes, nacl.signing.VerifyKey] = {}


@dataclass(slots=True)
class AuthStats:
    """Process-wide counters of signing and verification work (read by the benchmarks)."""

    signs: int = 0
    verifications: int = 0
    cache_hits: int = 0
    failures: int = 0

    def reset(self) -> None:
        """Zero every counter."""
        self.signs = self.verifications = self.cache_hits = self.failures = 0


_stats = AuthStats()


def auth_stats() -> AuthStats:
    """The process-wide signing/verification counters."""
    return _stats


def derive_signing_key(secret: bytes, name: str) -> nacl.signing.SigningKey:
    """A deterministic Ed25519 key for ``name`` from ``secret`` (the simulator's seed).

    Real deployments load their keys from disk; the simulator derives them so that a seed
    replays bit for bit (Ed25519 signatures are deterministic too).
    """
    seed = hashlib.blake2b(name.encode(), key=secret[:64], digest_size=32).digest()
    return nacl.signing.SigningKey(seed)


class Signer:
    """A node's (or a client's) signing key and the name it signs as."""

    __slots__ = ("_secret", "name", "public_key")

    def __init__(self, name: str, key: nacl.signing.SigningKey) -> None:
        self.name = name
        self.public_key: bytes = bytes(key.verify_key)
        # libsodium's 64-byte secret key (seed + public key): signing through the binding
        # directly skips pynacl's per-call wrapper objects (about 40% of the cost)
        self._secret: bytes = bytes(key._signing_key)

    @classmethod
    def derived(cls, secret: bytes, name: str) -> Signer:
        """A signer whose key is :func:`derive_signing_key` of ``secret`` and ``name``."""
        return cls(name, derive_signing_key(secret, name))

    def sign(self, body: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``body``."""
        _stats.signs += 1
        signed: bytes = nacl.bindings.crypto_sign(body, self._secret)
        return signed[:SIGNATURE_LEN]


@dataclass
class Keyring:
    """The public keys a replica trusts: the replicas' and the clients'.

    Replica keys are fixed for the cluster; client keys can be added while running
    (:meth:`register_client`) as members join. A message from a name not in the keyring is
    rejected as ``unknown-sender`` / ``unknown-client``.
    """

    replicas: Mapping[NodeId, bytes]
    clients: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, key in [*self.replicas.items(), *self.clients.items()]:
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_LEN:
                raise ValueError(f"the public key of {name!r} must be {PUBLIC_KEY_LEN} bytes")

    def replica_key(self, name: str) -> bytes | None:
        """The public key of replica ``name`` (None when it is not a replica)."""
        return self.replicas.get(name)

    def client_key(self, name: str) -> bytes | None:
        """The public key of client ``name`` (None when unknown)."""
        return self.clients.get(name)

    def register_client(self, name: str, public_key: bytes) -> None:
        """Trust ``public_key`` for client ``name`` from now on."""
        if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
            raise ValueError(f"a public key is {PUBLIC_KEY_LEN} bytes")
        self.clients[name] = public_key


def verify(public_key: bytes, body: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``body``.

    Results are cached per ``(public_key, body, signature)``; the cache is bounded and is
    simply emptied when it fills up.
    """
    if _skip_checks_for_tests:
        return True
    key = (public_key, body, signature)
    cached = _verified.get(key)
    if cached is not None:
        _stats.cache_hits += 1
        return cached
    _stats.verifications += 1
    vk = _verify_keys.get(public_key)
    if vk is None:
        try:
            vk = nacl.signing.VerifyKey(public_key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return False
        _verify_keys[public_key] = vk
    try:
        vk.verify(body, signature)
        ok = True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        ok = False
        _stats.failures += 1
    if len(_verified) >= _CACHE_LIMIT:
        _verified.clear()
    _verified[key] = ok
    return ok


def clear_verify_cache() -> None:
    """Forget every cached verification result (the next checks pay full price again).

    Results are a pure function of their inputs, so clearing never changes a verdict; the
    simulator clears at the start of each run so that a run's counters, and a benchmark's
    cost, do not depend on what ran before it in the same process.
    """
    _verified.clear()


@contextmanager
def unsafe_skip_signature_checks_for_tests() -> Iterator[None]:
    """TEST HOOK: every :func:`verify` returns True inside the ``with`` block.

    Exists so a test can prove that the simulator finds the safety violations Byzantine
    replicas cause when signatures are not checked. Worker processes forked inside the
    block inherit it. Never use it anywhere else.
    """
    global _skip_checks_for_tests
    previous = _skip_checks_for_tests
    _skip_checks_for_tests = True
    try:
        yield
    finally:
        _skip_checks_for_tests = previous
