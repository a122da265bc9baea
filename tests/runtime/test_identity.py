"""Key files, manifests, signed envelopes and the replay window."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import msgpack
import pytest

from ruflo_consensus.identity import (
    DEFAULT_HOPS,
    BadEnvelopeSignature,
    EnvelopeTooLarge,
    IdentityError,
    InsecureKeyFile,
    MalformedEnvelope,
    NodeIdentity,
    NonceSource,
    ReplayedEnvelope,
    ReplayWindow,
    StaleEnvelope,
    UnknownSender,
    WrongDestination,
    keygen,
    load_key_file,
    load_manifest,
    manifest_path,
    open_envelope,
    parse_frame,
    reframe,
    seal,
)

NOW = 1_700_000_000_000


def test_keygen_writes_a_private_key_and_a_signed_manifest(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "n1.key"
    ident = keygen("n1", key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = load_key_file(key, "n1")
    assert loaded.public_key == ident.public_key
    node_id, public = load_manifest(manifest_path(key), "n1")
    assert (node_id, public) == ("n1", ident.public_key)
    with pytest.raises(IdentityError, match="already exists"):
        keygen("n1", key)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "n1.key"
    keygen("n1", key)
    os.chmod(key, 0o644)
    with pytest.raises(InsecureKeyFile, match="0644"):
        load_key_file(key)
    os.chmod(key, 0o640)
    with pytest.raises(InsecureKeyFile):
        load_key_file(key)


def test_key_file_for_another_node_or_broken_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "n1.key"
    keygen("n1", key)
    with pytest.raises(IdentityError, match="not 'n2'"):
        load_key_file(key, "n2")
    raw = json.loads(key.read_text())
    raw["public_key"] = "00" * 32
    key.write_text(json.dumps(raw))
    with pytest.raises(IdentityError, match="does not match"):
        load_key_file(key)
    key.write_text("not json")
    with pytest.raises(IdentityError, match="not JSON"):
        load_key_file(key)


def test_a_tampered_manifest_does_not_verify(tmp_path: Path) -> None:
    key = tmp_path / "n1.key"
    keygen("n1", key)
    other = NodeIdentity.generate("evil")
    m = json.loads(manifest_path(key).read_text())
    m["manifest"]["public_key"] = other.public_key.hex()  # swap in another key
    manifest_path(key).write_text(json.dumps(m))
    with pytest.raises(IdentityError, match="signature"):
        load_manifest(manifest_path(key))


def _pair() -> tuple[NodeIdentity, dict[str, bytes]]:
    a = NodeIdentity.generate("a", b"\x01" * 32)
    return a, {"a": a.public_key}


def test_envelope_round_trip_and_every_field_is_covered() -> None:
    a, keys = _pair()
    frame = seal(a, "b", 3, b"payload", NonceSource(b"\x00" * 8), now_ms=NOW)
    env = open_envelope(frame, keys, ReplayWindow(), me="b", now_ms=NOW)
    assert (env.sender, env.dst, env.kind, env.payload, env.timestamp_ms) == (
        "a",
        "b",
        3,
        b"payload",
        NOW,
    )
    body, sig = msgpack.unpackb(frame)
    fields = msgpack.unpackb(body)
    for i, replacement in [(2, "c"), (3, b"\x09" * 16), (4, NOW + 1), (5, 4), (6, b"other")]:
        changed = list(fields)
        changed[i] = replacement
        forged = msgpack.packb([msgpack.packb(changed), sig])
        with pytest.raises(BadEnvelopeSignature):
            open_envelope(forged, keys, ReplayWindow(), me=changed[2], now_ms=NOW)


def test_each_kind_of_bad_envelope_has_its_reason() -> None:
    a, keys = _pair()
    nonces = NonceSource(b"\x00" * 8)
    window = ReplayWindow(max_age_s=30)

    def check(frame: bytes, exc: type[Exception], reason: str, me: str = "b") -> None:
        with pytest.raises(exc) as info:
            open_envelope(frame, keys, window, me=me, now_ms=NOW, max_size=4096)
        assert info.value.reason == reason  # type: ignore[attr-defined]

    check(b"\x00" * 5000, EnvelopeTooLarge, "too-large")
    check(b"\xc1garbage", MalformedEnvelope, "malformed")
    check(msgpack.packb([1, 2, 3]), MalformedEnvelope, "malformed")
    check(msgpack.packb([b"x", b"y" * 64]), MalformedEnvelope, "malformed")
    stranger = NodeIdentity.generate("z")
    check(seal(stranger, "b", 0, b"", nonces, NOW), UnknownSender, "unknown-sender")
    impostor = NodeIdentity("a", NodeIdentity.generate("x").signing_key)
    check(seal(impostor, "b", 0, b"", nonces, NOW), BadEnvelopeSignature, "bad-signature")
    check(seal(a, "c", 0, b"", nonces, NOW), WrongDestination, "wrong-destination")
    check(seal(a, "b", 0, b"", nonces, NOW - 31_000), StaleEnvelope, "stale")
    check(seal(a, "b", 0, b"", nonces, NOW + 31_000), StaleEnvelope, "stale")
    good = seal(a, "b", 0, b"", nonces, NOW)
    open_envelope(good, keys, window, me="b", now_ms=NOW)
    check(good, ReplayedEnvelope, "replayed")


def test_the_hop_budget_travels_outside_the_signature() -> None:
    a, keys = _pair()
    frame = seal(a, "b", 0, b"x", NonceSource(b"\x00" * 8), NOW, hops=3)
    env, body, sig, hops = parse_frame(frame)
    assert hops == 3 and env.payload == b"x"
    relayed = reframe(body, sig, hops - 1)  # what a relay sends: same signed body
    assert parse_frame(relayed)[3] == 2
    assert open_envelope(relayed, keys, ReplayWindow(), me="b", now_ms=NOW).payload == b"x"
    legacy = seal(a, "b", 0, b"x", NonceSource(b"\x01" * 8), NOW)  # no budget: the default
    assert parse_frame(legacy)[3] == DEFAULT_HOPS
    for bad in (-1, 256, "3", 1.0):
        with pytest.raises(MalformedEnvelope):
            parse_frame(msgpack.packb([body, sig, bad]))
    with pytest.raises(ValueError):
        reframe(body, sig, 256)


def test_a_forged_frame_does_not_burn_the_real_nonce() -> None:
    a, keys = _pair()
    window = ReplayWindow()
    real = seal(a, "b", 0, b"x", NonceSource(b"\x00" * 8), NOW)
    body, _sig = msgpack.unpackb(real)
    forged = msgpack.packb([body, bytes(64)])
    with pytest.raises(BadEnvelopeSignature):
        open_envelope(forged, keys, window, me="b", now_ms=NOW)
    assert open_envelope(real, keys, window, me="b", now_ms=NOW).payload == b"x"


def test_replay_window_accepts_reordering_within_width_only() -> None:
    w = ReplayWindow(max_age_s=30, width=8)
    boot = b"\x07" * 8

    def nonce(k: int) -> bytes:
        return boot + k.to_bytes(8, "big")

    for k in (5, 3, 4, 1):
        w.check("a", nonce(k), NOW, NOW)
    for k in (5, 3, 4, 1):
        with pytest.raises(ReplayedEnvelope):
            w.check("a", nonce(k), NOW, NOW)
    w.check("a", nonce(2), NOW, NOW)  # a late one still inside the window
    w.check("a", nonce(100), NOW, NOW)
    with pytest.raises(ReplayedEnvelope, match="older than the replay window"):
        w.check("a", nonce(50), NOW, NOW)  # unseen, but too far behind to tell
    w.check("a", nonce(2**60), NOW, NOW)  # a huge jump does not blow up memory
    w.check("b", nonce(5), NOW, NOW)  # another sender has its own track
    w.check("a", b"\x08" * 8 + (5).to_bytes(8, "big"), NOW, NOW)  # a new boot id
    assert len(w) == 3


def test_replay_window_forgets_old_boots() -> None:
    w = ReplayWindow(max_age_s=1)
    for i in range(50):
        w.check("a", bytes([i]) * 8 + (1).to_bytes(8, "big"), NOW, NOW)
    assert len(w) == 50
    later = NOW + 5_000
    w.check("a", b"\xff" * 8 + (1).to_bytes(8, "big"), later, later)
    assert len(w) == 1


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ruflo_consensus.cli import main

    key = tmp_path / "k" / "n9.key"
    assert main(["keygen", "--id", "n9", "--out", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_manifest(manifest_path(key), "n9")[1] == load_key_file(key, "n9").public_key
    assert "public key" in capsys.readouterr().out
    assert main(["keygen", "--id", "n9", "--out", str(key)]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["keygen", "--id", "n9", "--out", str(key), "--force"]) == 0
