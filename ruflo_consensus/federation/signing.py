"""Ed25519 signing and verification over canonical encodings (pynacl).

Verification runs inside ``apply`` and is deterministic, so every replica accepts or rejects
the same signed command. A malformed key or signature is a :class:`BadSignature`, never a
crash.
"""

from __future__ import annotations

from typing import Any

import nacl.exceptions
import nacl.signing

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.federation.errors import BadSignature

__all__ = [
    "PUBLIC_KEY_LEN",
    "SIGNATURE_LEN",
    "public_key_bytes",
    "sign_statement",
    "verify_statement",
]

PUBLIC_KEY_LEN = 32
"""Length of an Ed25519 public key in bytes."""

SIGNATURE_LEN = 64
"""Length of an Ed25519 signature in bytes."""


def public_key_bytes(signing_key: nacl.signing.SigningKey) -> bytes:
    """The 32-byte public key of ``signing_key``."""
    return bytes(signing_key.verify_key)


def sign_statement(signing_key: nacl.signing.SigningKey, statement: dict[str, Any]) -> bytes:
    """Sign ``canonical_bytes(statement)`` and return the 64-byte detached signature."""
    signed = signing_key.sign(canonical_bytes(statement))
    return bytes(signed.signature)


def verify_statement(public_key: Any, statement: dict[str, Any], signature: Any) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is ``public_key``'s on ``statement``."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != PUBLIC_KEY_LEN:
        raise BadSignature(f"public key must be {PUBLIC_KEY_LEN} bytes")
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_LEN:
        raise BadSignature(f"signature must be {SIGNATURE_LEN} bytes")
    try:
        message = canonical_bytes(statement)
    except (TypeError, ValueError) as exc:
        raise BadSignature(f"statement has no canonical encoding: {exc}") from None
    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(message, bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise BadSignature("signature does not verify") from None
