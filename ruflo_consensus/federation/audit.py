"""Replicated, hash-chained audit log.

Each record has the spec's fields (event id, timestamp, node, session, event type, severity,
category, source, target, agent, trust level, PII found/types/action, threat found/types,
latency, size, compliance mode, data residency, metadata) plus ``seq``, ``prev_hash`` and
``hash``: ``hash = SHA-256(canonical_bytes(record without "hash"))``, and ``prev_hash`` is the
previous record's hash (32 zero bytes before the first). Changing any field of any record
breaks the chain; :meth:`AuditLog.verify` returns the index of the first broken record.

HIPAA mode (the log's mode, or a record whose ``compliance_mode`` is ``"hipaa"``) never lets
raw content into the replicated state: ``content`` is dropped, and when PII was found so are
the metadata keys that carry original values (:data:`ORIGINAL_VALUE_KEYS`). Retention is
90 days (``prune``); the pruned prefix is summarised by an anchor (last pruned seq and hash)
so the remaining chain still verifies. Export: ``json``, ``ndjson``, ``csv``.

Commands (``audit.`` prefix optional; ``now`` in ms becomes the record's timestamp)::

    {"op": "append", "event_type": "...", "category": "security", "severity": "warn", ...,
     "now": t}
    {"op": "prune", "now": t}
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any, Self

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.federation.base import PlannedMachine
from ruflo_consensus.federation.errors import BadArgument, BadSnapshot
from ruflo_consensus.federation.validation import (
    MAX_ID_LEN,
    MAX_NOW_MS,
    Commit,
    check_fields,
    check_value,
    opt_bool,
    opt_number,
    opt_str,
    req_str,
    req_str_list,
)
from ruflo_consensus.federation.wire import (
    w_bool,
    w_bytes,
    w_choice,
    w_clock,
    w_count,
    w_float,
    w_int,
    w_list,
    w_map,
    w_opt_text,
    w_row,
    w_text,
    w_time,
)

__all__ = [
    "CATEGORIES",
    "COMPLIANCE_MODES",
    "EXPORT_COLUMNS",
    "GENESIS_HASH",
    "ORIGINAL_VALUE_KEYS",
    "PII_ACTIONS",
    "PII_TYPES",
    "RECORD_FIELDS",
    "RETENTION_MS",
    "SEVERITIES",
    "AuditLog",
    "record_hash",
    "verify_chain",
]

SEVERITIES = ("info", "warn", "error", "critical")
"""Record severities (spec)."""
CATEGORIES = ("discovery", "handshake", "message", "pii", "security", "consensus")
"""Record categories (spec)."""
COMPLIANCE_MODES = ("hipaa", "soc2", "gdpr", "none")
"""Compliance modes (spec)."""
PII_TYPES = frozenset(
    {
        "email",
        "ssn",
        "credit_card",
        "api_key",
        "password",
        "name",
        "address",
        "phone",
        "ip_address",
        "jwt",
        "aws_key",
        "private_key",
        "database_url",
        "github_token",
    }
)
"""The 14 PII types (spec)."""
PII_ACTIONS = ("block", "redact", "hash", "pass")
"""What the PII pipeline did."""
ORIGINAL_VALUE_KEYS = frozenset(
    {"content", "raw", "raw_content", "original", "original_value", "original_values", "values"}
)
"""Metadata keys dropped in HIPAA mode when PII was found."""
RETENTION_MS = 90 * 86_400_000
"""Records older than 90 days are pruned (spec)."""
GENESIS_HASH = bytes(32)
"""``prev_hash`` of the very first record."""

_MAX_CONTENT = 1 << 20
_MAX_METADATA = 64 * 1024
_MAX_LATENCY_MS = 1e12

RECORD_FIELDS = (
    "seq",
    "event_id",
    "timestamp",
    "node",
    "session",
    "event_type",
    "severity",
    "category",
    "source",
    "target",
    "agent",
    "trust_level",
    "pii_found",
    "pii_types",
    "pii_action",
    "threat_found",
    "threat_types",
    "latency_ms",
    "size_bytes",
    "compliance_mode",
    "data_residency",
    "content",
    "metadata",
    "hipaa_stripped",
    "prev_hash",
    "hash",
)
"""Every record has exactly these keys."""

EXPORT_COLUMNS = RECORD_FIELDS
"""Column order of the CSV export."""

_INPUT_FIELDS = (
    "event_type",
    "severity",
    "category",
    "session",
    "source",
    "target",
    "agent",
    "trust_level",
    "pii_found",
    "pii_types",
    "pii_action",
    "threat_found",
    "threat_types",
    "latency_ms",
    "size_bytes",
    "compliance_mode",
    "data_residency",
    "content",
    "metadata",
)


def record_hash(record: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical encoding of ``record`` without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_bytes(body)).digest()


def verify_chain(
    records: Sequence[dict[str, Any]], anchor_hash: bytes = GENESIS_HASH
) -> int | None:
    """Index of the first record whose hash or link is wrong, or ``None`` if the chain holds."""
    prev = anchor_hash
    for i, record in enumerate(records):
        try:
            ok = record.get("prev_hash") == prev and record_hash(record) == record.get("hash")
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return i
        prev = record["hash"]
    return None


def _choice(cmd: dict[str, Any], name: str, options: Sequence[str], default: str | None) -> Any:
    value = cmd.get(name)
    if value is None:
        return default
    if value not in options:
        raise BadArgument(f"{name!r} must be one of {list(options)}")
    return value


class AuditLog(PlannedMachine):
    """Replicated hash-chained audit log with retention, HIPAA stripping and export."""

    namespace = "audit"
    ops = ("append", "prune")

    def __init__(self, compliance_mode: str = "none", retention_ms: int = RETENTION_MS) -> None:
        super().__init__()
        if compliance_mode not in COMPLIANCE_MODES:
            raise ValueError(f"compliance_mode must be one of {COMPLIANCE_MODES}")
        self.compliance_mode = compliance_mode
        self.retention_ms = retention_ms
        self.records: list[dict[str, Any]] = []
        self.anchor_seq = 0
        self.anchor_hash = GENESIS_HASH
        self.next_seq = 1

    # ----------------------------------------------------------------- queries

    @property
    def head_hash(self) -> bytes:
        """Hash of the newest record (the anchor when the log is empty)."""
        return self.records[-1]["hash"] if self.records else self.anchor_hash

    def verify(self) -> int | None:
        """Index (into :attr:`records`) of the first broken record, ``None`` when intact."""
        broken = verify_chain(self.records, self.anchor_hash)
        if broken is not None:
            return broken
        for i, record in enumerate(self.records):
            if record.get("seq") != self.anchor_seq + 1 + i:
                return i
        return None

    # ------------------------------------------------------------------ plans

    def _plan_append(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, _INPUT_FIELDS)
        fields = self.validate_fields(cmd)
        node = opt_str(cmd, "node")
        return lambda: self.append_record(fields, t, node)

    def validate_fields(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Check the user-supplied record fields; return them normalised (no state change)."""
        pii_types = (
            []
            if cmd.get("pii_types") is None
            else req_str_list(cmd, "pii_types", allowed=PII_TYPES)
        )
        threat_types = [] if cmd.get("threat_types") is None else req_str_list(cmd, "threat_types")
        metadata = cmd.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
            raise BadArgument("'metadata' must be a map with string keys")
        metadata = check_value(metadata, "metadata", limit=_MAX_METADATA)
        latency = opt_number(cmd, "latency_ms", None, lo=0.0, hi=_MAX_LATENCY_MS)
        size = opt_number(cmd, "size_bytes", None, lo=0.0, hi=float(2**53))
        if size is not None and not size.is_integer():
            raise BadArgument("'size_bytes' must be an integer")
        pii_found = opt_bool(cmd, "pii_found", bool(pii_types))
        return {
            "event_type": req_str(cmd, "event_type", max_len=128),
            "severity": _choice(cmd, "severity", SEVERITIES, "info"),
            "category": _choice(cmd, "category", CATEGORIES, None) or _missing("category"),
            "session": opt_str(cmd, "session"),
            "source": opt_str(cmd, "source"),
            "target": opt_str(cmd, "target"),
            "agent": opt_str(cmd, "agent"),
            "trust_level": opt_str(cmd, "trust_level", max_len=32),
            "pii_found": pii_found,
            "pii_types": sorted(pii_types),
            "pii_action": _choice(cmd, "pii_action", PII_ACTIONS, None),
            "threat_found": opt_bool(cmd, "threat_found", bool(threat_types)),
            "threat_types": sorted(threat_types),
            "latency_ms": latency,
            "size_bytes": None if size is None else int(size),
            "compliance_mode": _choice(cmd, "compliance_mode", COMPLIANCE_MODES, None)
            or self.compliance_mode,
            "data_residency": opt_str(cmd, "data_residency", max_len=64),
            "content": opt_str(cmd, "content", max_len=_MAX_CONTENT, allow_empty=True),
            "metadata": metadata,
        }

    def append_record(self, fields: dict[str, Any], t: int, node: str | None) -> dict[str, Any]:
        """Append a record built from validated ``fields`` (no checks; used by commits)."""
        record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
        record.update(
            {
                "pii_found": False,
                "pii_types": [],
                "threat_found": False,
                "threat_types": [],
                "metadata": {},
                "severity": "info",
                "compliance_mode": self.compliance_mode,
            }
        )
        record.update(fields)
        hipaa = self.compliance_mode == "hipaa" or record["compliance_mode"] == "hipaa"
        stripped = False
        if hipaa:
            if record["content"] is not None:
                record["content"] = None
                stripped = True
            if record["pii_found"]:
                metadata = dict(record["metadata"])
                for key in sorted(metadata):
                    if key in ORIGINAL_VALUE_KEYS:
                        del metadata[key]
                        stripped = True
                record["metadata"] = metadata
        seq = self.next_seq
        record.update(
            {
                "seq": seq,
                "event_id": f"evt-{seq:012d}",
                "timestamp": t,
                "node": node,
                "hipaa_stripped": stripped,
                "prev_hash": self.head_hash,
            }
        )
        record["hash"] = record_hash(record)
        self.records.append(record)
        self.next_seq += 1
        return {"seq": seq, "event_id": record["event_id"], "hash": record["hash"]}

    def _plan_prune(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ())

        def commit() -> dict[str, Any]:
            cut = 0
            while (
                cut < len(self.records) and t - self.records[cut]["timestamp"] > self.retention_ms
            ):
                cut += 1
            if cut:
                self.anchor_seq = self.records[cut - 1]["seq"]
                self.anchor_hash = self.records[cut - 1]["hash"]
                del self.records[:cut]
            return {"pruned": cut, "anchor_seq": self.anchor_seq}

        return commit

    # ------------------------------------------------------------------ export

    def export(self, fmt: str = "json") -> str:
        """The records as ``json`` (an array), ``ndjson`` (one per line) or ``csv``.

        Hashes are hex strings; in CSV, lists are joined with ``;`` and metadata is JSON.
        """
        rows = [_exportable(r) for r in self.records]
        if fmt == "json":
            return json.dumps(rows, sort_keys=True, indent=2)
        if fmt == "ndjson":
            return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            for r in rows:
                writer.writerow([_csv_cell(r[c]) for c in EXPORT_COLUMNS])
            return buf.getvalue()
        raise ValueError(f"unknown export format {fmt!r}; use json, ndjson or csv")

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form of the whole state."""
        return {
            "clock": self.clock,
            "compliance_mode": self.compliance_mode,
            "retention_ms": self.retention_ms,
            "anchor_seq": self.anchor_seq,
            "anchor_hash": self.anchor_hash,
            "next_seq": self.next_seq,
            "records": [[r[k] for k in RECORD_FIELDS] for r in self.records],
        }

    def _blank(self) -> Self:
        return type(self)(self.compliance_mode, self.retention_ms)

    def _read_wire(self, value: Any) -> None:
        wire = w_map(
            value,
            "audit",
            (
                "clock",
                "compliance_mode",
                "retention_ms",
                "anchor_seq",
                "anchor_hash",
                "next_seq",
                "records",
            ),
        )
        self.clock = w_clock(wire["clock"])
        self.compliance_mode = w_choice(
            wire["compliance_mode"], "compliance_mode", COMPLIANCE_MODES
        )
        self.retention_ms = w_time(wire["retention_ms"], "retention_ms")
        self.anchor_seq = w_count(wire["anchor_seq"], "anchor_seq")
        self.anchor_hash = w_bytes(wire["anchor_hash"], "anchor_hash", length=32)
        self.next_seq = w_count(wire["next_seq"], "next_seq")
        self.records = [_read_record(row) for row in w_list(wire["records"], "records")]


def _read_record(value: Any) -> dict[str, Any]:
    """One record from its snapshot row, every field checked (the chain itself is not: a
    broken chain restores, and :meth:`AuditLog.verify` reports where it breaks)."""
    r = dict(zip(RECORD_FIELDS, w_row(value, "record", len(RECORD_FIELDS)), strict=True))

    def opt_text(name: str, max_len: int = MAX_ID_LEN) -> str | None:
        return w_opt_text(r[name], name, max_len=max_len)

    def text_list(name: str, allowed: frozenset[str] | None = None) -> list[str]:
        items = [w_text(x, name, max_len=64) for x in w_list(r[name], name, max_items=64)]
        if allowed is not None:
            for item in items:
                w_choice(item, name, sorted(allowed))
        return items

    pii_action = r["pii_action"]
    latency, size = r["latency_ms"], r["size_bytes"]
    return {
        "seq": w_count(r["seq"], "seq"),
        "event_id": w_text(r["event_id"], "event_id"),
        "timestamp": w_time(r["timestamp"], "timestamp"),
        "node": opt_text("node"),
        "session": opt_text("session"),
        "event_type": w_text(r["event_type"], "event_type", max_len=128),
        "severity": w_choice(r["severity"], "severity", SEVERITIES),
        "category": w_choice(r["category"], "category", CATEGORIES),
        "source": opt_text("source"),
        "target": opt_text("target"),
        "agent": opt_text("agent"),
        "trust_level": opt_text("trust_level", 32),
        "pii_found": w_bool(r["pii_found"], "pii_found"),
        "pii_types": text_list("pii_types", PII_TYPES),
        "pii_action": None
        if pii_action is None
        else w_choice(pii_action, "pii_action", PII_ACTIONS),
        "threat_found": w_bool(r["threat_found"], "threat_found"),
        "threat_types": text_list("threat_types"),
        "latency_ms": None
        if latency is None
        else w_float(latency, "latency_ms", lo=0.0, hi=_MAX_LATENCY_MS),
        "size_bytes": None if size is None else w_int(size, "size_bytes", hi=MAX_NOW_MS),
        "compliance_mode": w_choice(r["compliance_mode"], "compliance_mode", COMPLIANCE_MODES),
        "data_residency": opt_text("data_residency", 64),
        "content": None
        if r["content"] is None
        else w_text(r["content"], "content", max_len=_MAX_CONTENT, allow_empty=True),
        "metadata": _read_metadata(r["metadata"]),
        "hipaa_stripped": w_bool(r["hipaa_stripped"], "hipaa_stripped"),
        "prev_hash": w_bytes(r["prev_hash"], "prev_hash", length=32),
        "hash": w_bytes(r["hash"], "hash", length=32),
    }


def _read_metadata(value: Any) -> dict[str, Any]:
    """A metadata map: string keys, any values. That the values have a canonical encoding is
    checked once for the whole new state (see ``PlannedMachine.decoded``), not per record."""
    if not isinstance(value, dict):
        raise BadSnapshot("'metadata' must be a map with string keys")
    for name in value:
        w_text(name, "metadata key", max_len=_MAX_METADATA, allow_empty=True)
    return value


def _missing(name: str) -> str:
    raise BadArgument(f"{name!r} is required")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _exportable(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(record)
    return out


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)
