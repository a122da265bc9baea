"""PBFT: agreement that survives up to f Byzantine replicas out of 3f + 1.

- :mod:`.auth` — Ed25519 keys (pynacl), the keyring, cached verification, the test hook;
- :mod:`.messages` — signed canonical-msgpack envelopes, payloads, digests, frames;
- :mod:`.replica` — the sans-IO :class:`PbftCore` (normal case, checkpoints and garbage
  collection, state transfer, view change).

See ``docs/pbft.md``.
"""

from ...statemachine import decode_result
from .auth import (
    AuthStats,
    Keyring,
    Signer,
    auth_stats,
    clear_verify_cache,
    derive_signing_key,
    unsafe_skip_signature_checks_for_tests,
    verify,
)
from .messages import (
    PbftFrame,
    Signed,
    batch_digest,
    decode_body,
    decode_frame,
    encode_frame,
    open_envelope,
    seal,
    sign_request,
    state_digest,
)
from .replica import PbftConfig, PbftCore, PbftReady, quorum_size

__all__ = [
    "AuthStats",
    "Keyring",
    "PbftConfig",
    "PbftCore",
    "PbftFrame",
    "PbftReady",
    "Signed",
    "Signer",
    "auth_stats",
    "batch_digest",
    "clear_verify_cache",
    "decode_body",
    "decode_frame",
    "decode_result",
    "derive_signing_key",
    "encode_frame",
    "open_envelope",
    "quorum_size",
    "seal",
    "sign_request",
    "state_digest",
    "unsafe_skip_signature_checks_for_tests",
    "verify",
]
