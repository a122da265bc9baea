"""Audit log: fields, hash chain and tamper detection, HIPAA stripping, retention, export."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from ruflo_consensus.federation.audit import (
    EXPORT_COLUMNS,
    GENESIS_HASH,
    RECORD_FIELDS,
    RETENTION_MS,
    AuditLog,
    record_hash,
    verify_chain,
)
from ruflo_consensus.statemachine import CommandError

T0 = 4_000_000_000
DAY = 86_400_000


def rejected(machine: Any, command: Any, code: str) -> None:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before


def append(log: AuditLog, now: int = T0, **fields: Any) -> dict[str, Any]:
    cmd = {"op": "audit.append", "event_type": "test", "category": "message", "now": now}
    cmd.update(fields)
    result: dict[str, Any] = log.apply(cmd)
    return result


def filled(n: int = 4) -> AuditLog:
    log = AuditLog()
    for i in range(n):
        append(log, T0 + i, severity="warn", source=f"peer-{i}", metadata={"i": i})
    return log


def test_record_fields_and_chain() -> None:
    log = AuditLog()
    first = append(
        log,
        node="n1",
        session="s1",
        severity="critical",
        category="security",
        source="a",
        target="b",
        agent="coder",
        trust_level="ATTESTED",
        pii_types=["email", "phone"],
        pii_action="redact",
        threat_types=["prompt-injection"],
        latency_ms=12.5,
        size_bytes=2048,
        data_residency="eu",
        metadata={"k": [1, 2]},
    )
    rec = log.records[0]
    assert set(rec) == set(RECORD_FIELDS)
    assert first == {"seq": 1, "event_id": "evt-000000000001", "hash": rec["hash"]}
    assert rec["timestamp"] == T0 and rec["node"] == "n1" and rec["prev_hash"] == GENESIS_HASH
    assert rec["pii_found"] is True and rec["pii_types"] == ["email", "phone"]
    assert rec["threat_found"] is True and rec["compliance_mode"] == "none"
    assert rec["hash"] == record_hash(rec) and len(rec["hash"]) == 32
    second = append(log, T0 + 1)
    assert log.records[1]["prev_hash"] == rec["hash"] and second["seq"] == 2
    assert log.verify() is None


@pytest.mark.parametrize("index", [0, 1, 3])
def test_tampering_with_any_field_is_detected(index: int) -> None:
    log = filled()
    log.records[index]["severity"] = "info"
    assert log.verify() == index


def test_rehashing_a_tampered_record_breaks_the_next_link() -> None:
    log = filled()
    log.records[1]["metadata"] = {"i": 99}
    log.records[1]["hash"] = record_hash(log.records[1])
    assert log.verify() == 2


def test_deleting_or_reordering_records_is_detected() -> None:
    log = filled()
    del log.records[1]
    assert log.verify() == 1
    log = filled()
    log.records[1], log.records[2] = log.records[2], log.records[1]
    assert log.verify() == 1
    log = filled()
    log.records.pop()  # truncating the tail keeps a valid prefix
    assert log.verify() is None
    assert verify_chain(filled().records[1:]) == 0  # without its anchor a suffix is unverified


def test_hipaa_mode_strips_raw_content_and_original_values() -> None:
    log = AuditLog(compliance_mode="hipaa")
    append(
        log,
        content="patient alice@example.com",
        pii_types=["email"],
        metadata={"original": "alice@example.com", "rule": "r1", "raw": "x"},
    )
    rec = log.records[0]
    assert rec["content"] is None and rec["hipaa_stripped"] is True
    assert rec["metadata"] == {"rule": "r1"}
    assert b"alice" not in log.snapshot()
    # Without PII, metadata is kept but raw content is still not stored.
    append(log, content="no phi here", metadata={"original": "x"})
    assert log.records[1]["content"] is None and log.records[1]["metadata"] == {"original": "x"}


def test_hipaa_per_record_and_non_hipaa_logs() -> None:
    log = AuditLog()
    append(log, content="keep me", pii_types=["name"], metadata={"original": "Bob"})
    assert log.records[0]["content"] == "keep me"
    assert log.records[0]["metadata"] == {"original": "Bob"}
    append(log, content="strip me", compliance_mode="hipaa", pii_found=True, metadata={"raw": 1})
    assert log.records[1]["content"] is None and log.records[1]["metadata"] == {}
    assert log.verify() is None


def test_retention_prunes_after_90_days_and_the_chain_still_verifies() -> None:
    log = AuditLog()
    append(log, T0)
    append(log, T0 + DAY)
    append(log, T0 + 2 * DAY)
    assert log.apply({"op": "prune", "now": T0 + RETENTION_MS})["pruned"] == 0
    result = log.apply({"op": "prune", "now": T0 + DAY + RETENTION_MS + 1})
    assert result == {"pruned": 2, "anchor_seq": 2}
    assert [r["seq"] for r in log.records] == [3]
    assert log.verify() is None
    append(log, T0 + 100 * DAY)
    assert log.verify() is None
    log.records[0]["prev_hash"] = GENESIS_HASH
    assert log.verify() == 0


def test_exports() -> None:
    log = filled(3)
    append(log, T0 + 10, pii_types=["email", "ssn"], metadata={"a": {"b": 1}})
    as_json = json.loads(log.export("json"))
    assert [r["seq"] for r in as_json] == [1, 2, 3, 4]
    assert as_json[0]["hash"] == log.records[0]["hash"].hex()
    lines = log.export("ndjson").splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["pii_types"] == ["email", "ssn"]
    rows = list(csv.reader(io.StringIO(log.export("csv"))))
    assert tuple(rows[0]) == EXPORT_COLUMNS and len(rows) == 5
    last = dict(zip(rows[0], rows[4], strict=True))
    assert last["pii_types"] == "email;ssn" and json.loads(last["metadata"]) == {"a": {"b": 1}}
    assert last["pii_found"] == "true" and last["session"] == ""
    with pytest.raises(ValueError):
        log.export("xml")


@pytest.mark.parametrize(
    "fields",
    [
        {"category": "gossip"},
        {"severity": "fatal"},
        {"pii_types": ["dna"]},
        {"metadata": ["not", "a", "map"]},
        {"metadata": {"x": float("nan")}},
        {"event_type": ""},
        {"latency_ms": -1},
        {"size_bytes": 1.5},
        {"compliance_mode": "pci"},
        {"pii_action": "shred"},
        {"hash": b"forged"},
    ],
)
def test_bad_records_leave_state_byte_identical(fields: dict[str, Any]) -> None:
    log = filled(2)
    cmd = {"op": "append", "event_type": "x", "category": "pii", "now": T0 + 5}
    cmd.update(fields)
    rejected(log, cmd, "BAD_ARGUMENT")
    rejected(log, {"op": "append", "event_type": "x", "now": T0}, "BAD_ARGUMENT")


def test_snapshot_roundtrip() -> None:
    log = filled(3)
    other = AuditLog()
    other.restore(log.snapshot())
    assert other.snapshot() == log.snapshot() and other.verify() is None
