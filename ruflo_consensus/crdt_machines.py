"""State machines in their CRDT form: how state maps to Yjs types and commands to edits.

Under the Raft and PBFT backends a :class:`~ruflo_consensus.statemachine.StateMachine`
applies commands in one agreed order. Under the CRDT backend (``core/crdt.py``) there is no
order: every replica applies its own clients' commands at once, as edits of a shared
``pycrdt.Doc``, and merges the other replicas' edits whenever they arrive. A machine that
runs there says two things:

- how its state maps to Yjs shared types (:meth:`CrdtStateMachine.bind` creates or finds
  its root types in the document), and
- how a command becomes an edit of those types (:meth:`CrdtStateMachine.apply`, called by
  the core inside one document transaction, with an :class:`EditContext` giving the
  replica's id and a fresh hybrid-logical-clock timestamp).

The merge itself is Yjs's; the machine's job is to choose an encoding whose Yjs merge is the
merge rule it wants. The rule that makes that easy: **every replica writes only entries
keyed by its own node id**. Yjs then never has to resolve two replicas writing the same map
entry concurrently (which it would do by Yjs client id, not by anything meaningful to the
application), and the application-level merge (last-writer-wins, sum) is computed at read
time from the per-node entries, identically on every replica.

:class:`CrdtKV` is the reference machine: last-writer-wins registers ordered by
``(hlc, node id)`` and counters made of per-node contributions. ``docs/crdt.md`` explains
which federation machines are safe under CRDT and which are not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

from pycrdt import Doc, Map

from ruflo_consensus.statemachine import Command, CommandError, Result, require_op, require_str

__all__ = [
    "MAX_SAFE_INT",
    "CrdtKV",
    "CrdtStateMachine",
    "EditContext",
    "HlcTimestamp",
    "HybridLogicalClock",
    "exact_int",
]

NodeId = str

MAX_SAFE_INT = 2**53 - 1
"""Largest integer a Yjs number (an IEEE-754 double) holds exactly."""


def exact_int(value: Any) -> int | None:
    """``value`` as an int when it is an integral number a Yjs double holds exactly, else None.

    Yjs numbers are doubles, so an int written to a document comes back as a float.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else None
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INT:
        return int(value)
    return None


# --------------------------------------------------------------------------- clocks


class HlcTimestamp(NamedTuple):
    """A hybrid-logical-clock timestamp with its node id as the final tie break.

    Being a tuple, timestamps compare as ``(physical, logical, node)``: this is the total
    order the last-writer-wins rule uses, and it is the same on every replica.
    """

    physical: int
    logical: int
    node: NodeId

    def to_wire(self) -> list[Any]:
        """The msgpack/JSON form ``[physical, logical, node]`` (as command results carry it)."""
        return [self.physical, self.logical, self.node]

    @classmethod
    def from_wire(cls, raw: Any) -> HlcTimestamp:
        """Parse ``[physical, logical, node]``; raise ValueError when it is anything else."""
        if not isinstance(raw, list | tuple) or len(raw) != 3:
            raise ValueError(f"an HLC timestamp is [physical, logical, node], got {raw!r}")
        physical, logical, node = exact_int(raw[0]), exact_int(raw[1]), raw[2]
        if physical is None or logical is None or physical < 0 or logical < 0:
            raise ValueError(f"bad HLC counters in {raw!r}")
        if not isinstance(node, str):
            raise ValueError(f"bad HLC node in {raw!r}")
        return cls(physical, logical, node)


class HybridLogicalClock:
    """A hybrid logical clock (Kulkarni et al., 2014) fed with explicit physical time.

    The physical part is whatever the caller passes as ``physical_ms`` — the CRDT core
    passes ``ticks * tick_ms`` of its own logical clock, so nothing here reads a real clock
    and a run is reproducible. Rules:

    - :meth:`now` issues a timestamp strictly greater than every timestamp this clock issued
      or observed: ``(max(physical_ms, last.physical), 0)`` when the physical part moved
      forward, else ``(last.physical, last.logical + 1)``;
    - :meth:`update` observes a timestamp from elsewhere (a merged remote edit) and moves
      the clock up to it without issuing anything, so the next local write orders after
      every write this replica has seen (a causally later write always wins).

    The logical counter absorbs clock skew: if a peer's physical part runs ahead, this node
    keeps that physical value and counts logically until its own clock catches up.
    """

    __slots__ = ("_logical", "_physical", "node_id")

    def __init__(self, node_id: NodeId, physical: int = 0, logical: int = 0) -> None:
        if physical < 0 or logical < 0:
            raise ValueError("HLC counters cannot be negative")
        self.node_id = node_id
        self._physical = physical
        self._logical = logical

    @property
    def last(self) -> HlcTimestamp:
        """The greatest ``(physical, logical)`` issued or observed, stamped with this node."""
        return HlcTimestamp(self._physical, self._logical, self.node_id)

    def now(self, physical_ms: int) -> HlcTimestamp:
        """Issue a fresh timestamp at physical time ``physical_ms`` (strictly increasing)."""
        if physical_ms > self._physical:
            self._physical = physical_ms
            self._logical = 0
        else:
            self._logical += 1
        return HlcTimestamp(self._physical, self._logical, self.node_id)

    def update(self, received: HlcTimestamp | tuple[int, int]) -> None:
        """Observe a timestamp issued elsewhere: the next :meth:`now` will order after it."""
        physical, logical = received[0], received[1]
        if (physical, logical) > (self._physical, self._logical):
            self._physical = physical
            self._logical = logical


# --------------------------------------------------------------------------- contract


@dataclass(frozen=True, slots=True)
class EditContext:
    """What a machine may use while turning a command into an edit.

    ``hlc`` is a timestamp issued for this command only (strictly greater than anything
    the replica issued or merged before), ``node_id`` the replica applying it — the key of
    the entries the machine may write.
    """

    node_id: NodeId
    hlc: HlcTimestamp


@runtime_checkable
class CrdtStateMachine(Protocol):
    """The CRDT form of the state-machine contract.

    The core calls :meth:`bind` once, with a document that is still empty (state persisted
    before a restart is merged *after* binding, so observers see it). :meth:`apply` runs
    inside one document transaction; it must validate the command completely and raise
    :class:`~ruflo_consensus.statemachine.CommandError` *before* its first edit — the core
    cannot roll a transaction back. A read performs no edit. :meth:`value` is the
    application-level state in a canonical form (plain dicts/lists, sorted), equal on two
    replicas exactly when their documents hold the same edits.

    Root type names starting with ``ruflo.`` are reserved for the core.
    """

    def bind(self, doc: Doc[Any]) -> None:
        """Create or find this machine's root types in ``doc``."""
        ...

    def apply(self, command: Command, ctx: EditContext) -> Result:
        """Turn ``command`` into edits (or read); raise CommandError before editing."""
        ...

    def value(self) -> Any:
        """The canonical application-level value of the current document."""
        ...


# --------------------------------------------------------------------------- KV machine


def _slot_key(key: str, node: NodeId) -> str:
    """The document key of ``node``'s entry for application key ``key`` (unambiguous)."""
    return json.dumps([key, node], ensure_ascii=False, separators=(",", ":"))


def _parse_slot_key(raw: str) -> tuple[str, NodeId] | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    if (
        isinstance(parsed, list)
        and len(parsed) == 2
        and isinstance(parsed[0], str)
        and isinstance(parsed[1], str)
    ):
        return parsed[0], parsed[1]
    return None


def _parse_lww(raw: Any) -> tuple[int, int, str | None] | None:
    if not isinstance(raw, list) or len(raw) != 3:
        return None
    physical, logical, value = exact_int(raw[0]), exact_int(raw[1]), raw[2]
    if physical is None or logical is None or physical < 0 or logical < 0:
        return None
    if value is not None and not isinstance(value, str):
        return None
    return physical, logical, value


class CrdtKV:
    """Key-value machine for the CRDT backend: LWW registers and per-node counters.

    Commands (keys and values are strings, ``amount`` an int):

    - ``{"op": "put", "key": k, "value": v}`` → the write's timestamp
      ``[physical, logical, node]``;
    - ``{"op": "delete", "key": k}`` → the timestamp of the tombstone it wrote;
    - ``{"op": "get", "key": k}`` → the winning value, ``""`` when the key was never
      written or its winner is a tombstone;
    - ``{"op": "read", "key": k}`` → ``{"value": v | "", "ts": [p, l, node] | None}``, the
      winner with its timestamp (what session checks need);
    - ``{"op": "incr", "key": k, "amount": n}`` → the counter's total as this replica sees
      it after adding ``n`` (which may be negative);
    - ``{"op": "counter", "key": k}`` → the counter's total (0 when never incremented).

    **Registers.** Document map ``kv.lww``: key ``[k, node]`` (JSON) → ``[physical, logical,
    value]``; ``value`` is ``null`` for a tombstone. A replica writes only its own entry of
    a key, so Yjs never merges two replicas' writes of the same map entry. The value of
    ``k`` is the entry with the greatest ``(physical, logical, node)``: last writer wins by
    hybrid logical clock, node id breaking ties — the same answer on every replica holding
    the same entries, whatever order they arrived in.

    **Counters.** Document map ``kv.counters``: key ``[k, node]`` → that node's contribution
    (an int, kept within ±2**53-1 so the Yjs double holds it exactly; ``OUT_OF_RANGE``
    otherwise). The counter is the sum of the contributions. Each replica adds only to its
    own entry, so concurrent increments on different replicas never overwrite each other.

    Reads use an index kept up to date by Yjs map observers, so a read costs the number of
    writers of that key, not the size of the document. Entries that fail to parse (which
    only a faulty peer could write) are ignored and counted in :attr:`malformed`.
    """

    LWW_ROOT = "kv.lww"
    COUNTER_ROOT = "kv.counters"

    def __init__(self) -> None:
        self._lww_map: Map[Any] | None = None
        self._counter_map: Map[Any] | None = None
        self._lww: dict[str, dict[NodeId, tuple[int, int, str | None]]] = {}
        self._counters: dict[str, dict[NodeId, int]] = {}
        self.malformed = 0

    # ----------------------------------------------------------------- binding

    def bind(self, doc: Doc[Any]) -> None:
        """Create the two root maps and start indexing them."""
        if self._lww_map is not None:
            raise RuntimeError("CrdtKV is already bound to a document")
        self._lww_map = doc.get(self.LWW_ROOT, type=Map)
        self._counter_map = doc.get(self.COUNTER_ROOT, type=Map)
        for raw_key, raw in self._lww_map.items():
            self._index_lww(raw_key, raw)
        for raw_key, raw in self._counter_map.items():
            self._index_counter(raw_key, raw)
        self._lww_map.observe(self._on_lww_event)
        self._counter_map.observe(self._on_counter_event)

    def _maps(self) -> tuple[Map[Any], Map[Any]]:
        if self._lww_map is None or self._counter_map is None:
            raise RuntimeError("CrdtKV is not bound to a document")
        return self._lww_map, self._counter_map

    @staticmethod
    def _event_changes(event: Any) -> dict[str, Any]:
        changes = cast(Any, event).keys
        return changes if isinstance(changes, dict) else {}

    def _on_lww_event(self, event: Any) -> None:
        for raw_key, change in self._event_changes(event).items():
            if isinstance(change, dict) and change.get("action") == "delete":
                self._unindex(self._lww, raw_key)
            elif isinstance(change, dict):
                self._index_lww(raw_key, change.get("newValue"))

    def _on_counter_event(self, event: Any) -> None:
        for raw_key, change in self._event_changes(event).items():
            if isinstance(change, dict) and change.get("action") == "delete":
                self._unindex(self._counters, raw_key)
            elif isinstance(change, dict):
                self._index_counter(raw_key, change.get("newValue"))

    def _index_lww(self, raw_key: str, raw: Any) -> None:
        slot, entry = _parse_slot_key(raw_key), _parse_lww(raw)
        if slot is None or entry is None:
            self.malformed += 1
            return
        self._lww.setdefault(slot[0], {})[slot[1]] = entry

    def _index_counter(self, raw_key: str, raw: Any) -> None:
        slot, amount = _parse_slot_key(raw_key), exact_int(raw)
        if slot is None or amount is None:
            self.malformed += 1
            return
        self._counters.setdefault(slot[0], {})[slot[1]] = amount

    @staticmethod
    def _unindex(index: dict[str, dict[NodeId, Any]], raw_key: str) -> None:
        slot = _parse_slot_key(raw_key)
        if slot is None:
            return
        per_node = index.get(slot[0])
        if per_node is not None:
            per_node.pop(slot[1], None)
            if not per_node:
                del index[slot[0]]

    # ----------------------------------------------------------------- reads

    def winner(self, key: str) -> tuple[str | None, HlcTimestamp] | None:
        """The LWW winner of ``key`` as ``(value, timestamp)``; None when never written.

        ``value`` is None when the winner is a tombstone (a delete).
        """
        per_node = self._lww.get(key)
        if not per_node:
            return None
        ts, value = max(
            ((HlcTimestamp(p, lg, node), v) for node, (p, lg, v) in per_node.items()),
            key=lambda item: item[0],
        )
        return value, ts

    def counter(self, key: str) -> int:
        """The counter ``key``: the sum of every node's contribution (0 when none)."""
        return sum(self._counters.get(key, {}).values())

    def contributions(self, key: str) -> dict[NodeId, int]:
        """Each node's contribution to counter ``key``, by node id in sorted order."""
        per_node = self._counters.get(key, {})
        return {node: per_node[node] for node in sorted(per_node)}

    def value(self) -> Any:
        """Canonical state: every key's LWW winner and every counter with its parts.

        ``{"kv": {k: {"value": v | None, "ts": [p, l, node]}}, "counters": {k: {"total": n,
        "by_node": {node: c}}}}`` with keys sorted at every level; a tombstone winner keeps
        its key with ``"value": None`` (the delete is a write in the LWW order).
        """
        kv: dict[str, Any] = {}
        for key in sorted(self._lww):
            won = self.winner(key)
            if won is not None:
                kv[key] = {"value": won[0], "ts": won[1].to_wire()}
        counters: dict[str, Any] = {}
        for key in sorted(self._counters):
            parts = self.contributions(key)
            counters[key] = {"total": sum(parts.values()), "by_node": parts}
        return {"kv": kv, "counters": counters}

    # ----------------------------------------------------------------- commands

    def apply(self, command: Command, ctx: EditContext) -> Result:
        """Apply one KV command as replica ``ctx.node_id`` at time ``ctx.hlc``."""
        cmd, op = require_op(command)
        key = require_str(cmd, "key")
        lww, counters = self._maps()
        if op == "get":
            won = self.winner(key)
            return "" if won is None or won[0] is None else won[0]
        if op == "read":
            won = self.winner(key)
            if won is None:
                return {"value": "", "ts": None}
            return {"value": "" if won[0] is None else won[0], "ts": won[1].to_wire()}
        if op == "counter":
            return self.counter(key)
        if op in ("put", "delete"):
            value = require_str(cmd, "value") if op == "put" else None
            ts = ctx.hlc
            if ts.node != ctx.node_id:
                raise CommandError("BAD_CONTEXT", "timestamp from another node")
            if ts.physical > MAX_SAFE_INT or ts.logical > MAX_SAFE_INT:
                raise CommandError("OUT_OF_RANGE", "clock beyond the exact range of Yjs numbers")
            lww[_slot_key(key, ctx.node_id)] = [ts.physical, ts.logical, value]
            return ts.to_wire()
        if op == "incr":
            amount = cmd.get("amount")
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise CommandError("BAD_ARGUMENT", "'amount' must be an integer")
            mine = self._counters.get(key, {}).get(ctx.node_id, 0)
            new = mine + amount
            if abs(amount) > MAX_SAFE_INT or abs(new) > MAX_SAFE_INT:
                raise CommandError("OUT_OF_RANGE", "a contribution must stay within ±2**53-1")
            counters[_slot_key(key, ctx.node_id)] = new
            # The observer updates the index at commit; the caller sees the new total now.
            return self.counter(key) - mine + new
        raise CommandError("UNKNOWN_OP", f"CRDT KV machine has no op {op!r}")
