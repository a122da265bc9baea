"""A sans-IO CRDT core on pycrdt (Yrs/Yjs): local writes, gossip and anti-entropy.

Every replica holds a ``pycrdt.Doc``. There is no order to agree on and no leader:

- **local commands** (:meth:`CrdtCore.propose`) apply at once, inside one document
  transaction, through a :class:`~ruflo_consensus.crdt_machines.CrdtStateMachine`; the
  result is reported in ``Ready.results`` straight away and the edit's delta update is
  pushed to ``gossip_fanout`` random neighbours with a hop budget of ``gossip_ttl``;
- **gossip** (:class:`CrdtUpdate`): a received delta is merged; if it brought anything new
  and its hop budget is not spent, it is pushed on to ``gossip_fanout`` random neighbours
  other than the sender with ``ttl - 1``. Relaying across the overlay emerges from this
  re-gossip — the core only ever talks to its direct links;
- **anti-entropy** (:class:`SyncRequest` / :class:`SyncReply`): every ``anti_entropy_ms``
  a replica sends its state vector to one random neighbour, which answers with everything
  the vector lacks plus its own vector; the requester merges that and, when the answer's
  vector shows the neighbour lacks something of its own, sends the missing part back
  (``ttl=1``, never re-gossiped). Whatever gossip lost to drops, partitions or crashes is
  recovered this way, pairwise, once links are up again.

**Causal delivery.** Yjs updates commute and are idempotent, and Yrs is meant to park an
update whose predecessors are missing until they arrive. pycrdt 0.14's Yrs gets that
parking wrong in some cases (two parked updates of one client, the later one deleting an
item of the earlier one — e.g. two overwrites of a map key arriving before the first
write: the key is lost for good; ``tests/core/test_crdt_properties.py`` has the reproduction).
So the core never lets Yrs park anything: every update travels with its **base**, the
state vector it was cut against (everything it can depend on, other than itself), and a
replica applies it only once its own state vector covers the base. An update that arrives
early waits in a small bounded buffer (oldest dropped first) and the replica asks the
sender for what it lacks (a :class:`SyncRequest`, at most every quarter anti-entropy
interval per sender); whatever the buffer drops, anti-entropy brings back later. Applied
this way, any set of updates, in any order, with duplicates, gives the same document.

**Determinism.** The Yjs client id is derived from the node id (and, after a restart,
from the persisted state) with SHA-256, never drawn at random; gossip targets come from the
injected ``random.Random`` sampling *sorted* neighbour lists; time is ``tick()`` calls.
One seed therefore gives one message sequence, bit for bit.

**Persistence.** ``Ready.persist.state`` is the whole encoded document. It comes with every
``Ready`` that carries results or local edits — an acknowledged write or an answered read
is durable before the answer leaves — and, for merged remote updates alone, once the
document has been dirty for an anti-entropy interval: a crash that loses merged updates
loses nothing anti-entropy cannot bring back, and relaying does not rewrite the document
on every message.

**Clock.** The core keeps a :class:`~ruflo_consensus.crdt_machines.HybridLogicalClock`
whose physical part is ``ticks * tick_ms``. After every local edit it writes its clock to
its own entry of the reserved root map ``ruflo.hlc``; observing that map moves every
replica's clock past every edit it has merged, and rebuilds the clock on restart.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from pycrdt import Doc, Map, TransactionEvent, get_state, merge_updates

from ruflo_consensus.crdt_machines import (
    CrdtStateMachine,
    EditContext,
    HybridLogicalClock,
    exact_int,
)
from ruflo_consensus.statemachine import CommandError, CommandRejected

from .base import (
    CommandResult,
    Committed,
    Entry,
    Message,
    NodeId,
    Persist,
    Proposal,
    ProtocolError,
    Ready,
    Role,
)

__all__ = [
    "CRDT_MESSAGES",
    "HLC_ROOT",
    "CrdtConfig",
    "CrdtCore",
    "CrdtUpdate",
    "SyncReply",
    "SyncRequest",
    "client_id_for",
    "covers",
    "decode_delete_set",
    "decode_state_vector",
    "encode_state_vector",
    "precheck_update",
]

HLC_ROOT = "ruflo.hlc"
"""Reserved root map: node id → ``[physical, logical]`` of that node's latest edit."""

_MAX_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class CrdtConfig:
    """Timing and gossip settings. Defaults: 10 ms ticks, fanout 3, TTL 10, sync every 200 ms.

    ``anti_entropy`` switches the periodic state-vector exchange (and the pull of missing
    predecessors) off — a test uses that to show that replicas do *not* converge from
    gossip alone when messages are dropped. ``max_buffered`` bounds the updates kept
    waiting for their base.
    """

    tick_ms: int = 10
    gossip_fanout: int = 3
    gossip_ttl: int = 10
    anti_entropy_ms: int = 200
    anti_entropy: bool = True
    max_buffered: int = 256

    def __post_init__(self) -> None:
        if self.tick_ms <= 0:
            raise ValueError("tick_ms must be positive")
        if self.gossip_fanout < 1:
            raise ValueError("gossip_fanout must be at least 1")
        if self.gossip_ttl < 1:
            raise ValueError("gossip_ttl must be at least 1")
        if self.anti_entropy_ms < self.tick_ms:
            raise ValueError("anti_entropy_ms must be at least one tick")
        if self.max_buffered < 0:
            raise ValueError("max_buffered cannot be negative")

    @property
    def anti_entropy_ticks(self) -> int:
        """The anti-entropy interval in ticks."""
        return max(1, self.anti_entropy_ms // self.tick_ms)

    @property
    def pull_ticks(self) -> int:
        """Minimum ticks between two pulls of missing predecessors from one sender."""
        return max(1, self.anti_entropy_ticks // 4)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class CrdtUpdate(Message):
    """A Yjs v1 update pushed by gossip.

    ``base`` is the state vector (Yjs v1 encoding) the update was cut against: a replica
    applies it once it holds everything ``base`` counts. ``ttl`` is the number of hops
    left including this one.
    """

    update: bytes
    ttl: int
    base: bytes


@dataclass(frozen=True, slots=True)
class SyncRequest(Message):
    """Anti-entropy: "this is my state vector (Yjs v1 encoding), send me what I lack"."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncReply(Message):
    """Answer to :class:`SyncRequest`.

    ``update`` is everything the requester lacked, cut against ``base`` (the requester's
    state vector from the request); ``state_vector`` is the replier's own.
    """

    update: bytes
    state_vector: bytes
    base: bytes


CRDT_MESSAGES: tuple[type[Message], ...] = (CrdtUpdate, SyncRequest, SyncReply)


# --------------------------------------------------------------------------- encodings


def _read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one lib0 variable-length unsigned int at ``pos``; return (value, next pos)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")
    if value > _MAX_U64:
        raise ValueError("varint beyond 64 bits")
    return value, pos


def _write_varuint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector into ``{client id: clock}``; ValueError when malformed.

    Yrs encodes the entries in its hash-map order, so two equal vectors may differ as
    bytes; compare decoded vectors (or :func:`encode_state_vector` outputs) instead.
    """
    count, pos = _read_varuint(data, 0)
    if count > len(data):
        raise ValueError("state vector claims more entries than it has bytes")
    vector: dict[int, int] = {}
    for _ in range(count):
        client, pos = _read_varuint(data, pos)
        clock, pos = _read_varuint(data, pos)
        if client in vector:
            raise ValueError(f"client {client} appears twice")
        vector[client] = clock
    if pos != len(data):
        raise ValueError("trailing bytes after the state vector")
    return vector


def encode_state_vector(vector: dict[int, int]) -> bytes:
    """Canonical Yjs v1 encoding of a state vector: entries sorted by client id.

    Yrs decodes it like its own encoding; equal vectors give equal bytes.
    """
    out = bytearray()
    _write_varuint(len(vector), out)
    for client in sorted(vector):
        _write_varuint(client, out)
        _write_varuint(vector[client], out)
    return bytes(out)


def decode_delete_set(update: bytes) -> dict[int, list[tuple[int, int]]]:
    """The delete set of a Yjs v1 update that carries no structs, canonicalised.

    ``doc.get_update(own state vector)`` is exactly such an update; the result maps client
    id → sorted, merged ``(clock, length)`` ranges, so equal delete sets compare equal.
    """
    structs, pos = _read_varuint(update, 0)
    if structs != 0:
        raise ValueError("update carries structs; only a bare delete set is decoded")
    clients, pos = _read_varuint(update, pos)
    result: dict[int, list[tuple[int, int]]] = {}
    for _ in range(clients):
        client, pos = _read_varuint(update, pos)
        n, pos = _read_varuint(update, pos)
        ranges = result.setdefault(client, [])
        for _ in range(n):
            clock, pos = _read_varuint(update, pos)
            length, pos = _read_varuint(update, pos)
            ranges.append((clock, length))
    if pos != len(update):
        raise ValueError("trailing bytes after the delete set")
    canonical: dict[int, list[tuple[int, int]]] = {}
    for client in sorted(result):
        merged: list[tuple[int, int]] = []
        for clock, length in sorted(result[client]):
            if merged and clock <= merged[-1][0] + merged[-1][1]:
                start, prev_len = merged[-1]
                merged[-1] = (start, max(prev_len, clock + length - start))
            elif length > 0:
                merged.append((clock, length))
        if merged:
            canonical[client] = merged
    return canonical


def precheck_update(data: bytes) -> None:
    """Cheap sanity check of a Yjs v1 update's leading counts; ValueError when implausible.

    Yrs sizes its tables from the counts at the start of an update before it notices the
    bytes are not there, so a dozen bytes of garbage claiming 10**8 clients cost a
    fraction of a second to reject. Every client entry and struct takes at least one
    byte, so a count above the update's length is refused here first.
    """
    n_clients, pos = _read_varuint(data, 0)
    if n_clients > len(data):
        raise ValueError(f"update claims {n_clients} clients in {len(data)} bytes")
    if n_clients:
        n_structs, pos = _read_varuint(data, pos)
        if n_structs > len(data):
            raise ValueError(f"update claims {n_structs} structs in {len(data)} bytes")


def client_id_for(node_id: NodeId, state: bytes | None = None) -> int:
    """The Yjs client id of ``node_id``: 53 bits of SHA-256 over the node id (and state).

    A restarted replica mixes its persisted state into the id, so each incarnation that
    starts from a different state issues items under a fresh id. Two items with one
    ``(client, clock)`` but different content would make replicas diverge for good; with
    persist-before-send, an incarnation restarting from the *same* state never sent
    anything beyond it, so reusing its id is harmless.
    """
    h = hashlib.sha256(b"ruflo-crdt-client\x00" + node_id.encode())
    if state is not None:
        h.update(b"\x00" + hashlib.sha256(state).digest())
    return int.from_bytes(h.digest()[:8], "big") & (2**53 - 1)


def covers(mine: dict[int, int], base: dict[int, int]) -> bool:
    """True when state vector ``mine`` holds everything ``base`` counts."""
    return all(mine.get(client, 0) >= clock for client, clock in base.items())


# --------------------------------------------------------------------------- the core


@dataclass(slots=True)
class _Waiting:
    """An update received before its base: kept until the base is covered."""

    src: NodeId
    update: bytes
    base: bytes
    base_vector: dict[int, int]
    ttl: int
    kind: str


@dataclass(slots=True)
class _Batch:
    """Local deltas gossiped together: all cut against ``base``."""

    base: bytes
    deltas: list[bytes] = field(default_factory=list)


class CrdtCore:
    """One CRDT replica's protocol state. See the module docstring for the protocol.

    ``peers`` lists every replica including this one (messages from others are rejected);
    ``neighbours`` are this node's direct links in the topology — gossip and anti-entropy
    go only to them. ``state`` is what storage returned on restart (the last
    ``Persist.state``); a fresh node passes None.
    """

    def __init__(
        self,
        node_id: NodeId,
        peers: Sequence[NodeId],
        neighbours: Sequence[NodeId],
        rng: random.Random,
        machine: CrdtStateMachine,
        config: CrdtConfig | None = None,
        state: bytes | None = None,
    ) -> None:
        if node_id not in peers:
            raise ValueError(f"{node_id!r} must be one of the peers {list(peers)!r}")
        if len(set(peers)) != len(peers):
            raise ValueError("peer ids must be unique")
        if len(set(neighbours)) != len(neighbours):
            raise ValueError("neighbour ids must be unique")
        for n in neighbours:
            if n == node_id or n not in peers:
                raise ValueError(f"neighbour {n!r} must be another peer")
        self.node_id = node_id
        self.config = config or CrdtConfig()
        self.peers: tuple[NodeId, ...] = tuple(peers)
        self.neighbours: tuple[NodeId, ...] = tuple(sorted(neighbours))
        self.rng = rng
        self.machine = machine

        self.hlc = HybridLogicalClock(node_id)
        self.ticks = 0
        self.local_index = 0
        # first anti-entropy round at a random phase, so replicas do not sync in lockstep
        self.sync_elapsed = rng.randrange(self.config.anti_entropy_ticks)

        self._doc: Doc[Any] = Doc(
            client_id=client_id_for(node_id, state), guid=f"ruflo-crdt:{node_id}"
        )
        self._txn_updates: list[bytes] = []
        self._doc.observe(self._on_transaction)
        self._hlc_map: Map[Any] = self._doc.get(HLC_ROOT, type=Map)
        self._hlc_map.observe(self._on_hlc_event)
        machine.bind(self._doc)
        if state is not None:
            try:
                precheck_update(state)
                self._doc.apply_update(state)
            except Exception as exc:
                raise ValueError(f"persisted CRDT state does not decode: {exc}") from None
        self._txn_updates.clear()

        self._msgs: list[Message] = []
        self._committed: list[Committed] = []
        self._results: list[CommandResult] = []
        self._batches: list[_Batch] = []
        self._merged_since_local = False
        self._waiting: list[_Waiting] = []
        self._last_pull: dict[NodeId, int] = {}
        self._dirty = False  # the document changed since the last Persist.state
        self._persist_due = False  # merged remote changes waited an anti-entropy interval
        self._persisted_at = 0
        self._sv_cache: tuple[bytes, dict[int, int]] = (b"", {})
        self._sessions: dict[str, tuple[int, Any]] = {}
        # counters a driver may export
        self.rejected: dict[str, int] = {}
        self.updates_applied: dict[str, int] = {
            "local": 0,
            "gossip-new": 0,
            "gossip-duplicate": 0,
            "sync-new": 0,
            "sync-duplicate": 0,
            "buffered": 0,
            "buffer-dropped": 0,
        }

    # ----------------------------------------------------------------- properties

    @property
    def role(self) -> Role:
        """Always :attr:`Role.REPLICA`: every CRDT node is an equal peer."""
        return Role.REPLICA

    @property
    def term(self) -> int:
        """Always 0: there are no terms or views."""
        return 0

    @property
    def leader(self) -> NodeId | None:
        """Always None: nobody orders proposals."""
        return None

    @property
    def doc(self) -> Doc[Any]:
        """The replica's document, for reading (edit it only through :meth:`propose`)."""
        return self._doc

    @property
    def buffered(self) -> int:
        """How many received updates wait for their base."""
        return len(self._waiting)

    def state_vector(self) -> bytes:
        """This replica's state vector in canonical encoding (sorted by client id)."""
        return encode_state_vector(self._vector())

    def _vector(self) -> dict[int, int]:
        raw = self._doc.get_state()
        if raw != self._sv_cache[0]:
            self._sv_cache = (raw, decode_state_vector(raw))
        return self._sv_cache[1]

    def delete_set(self) -> dict[int, list[tuple[int, int]]]:
        """This replica's delete set, canonicalised (see :func:`decode_delete_set`)."""
        return decode_delete_set(self._doc.get_update(self._doc.get_state()))

    def fingerprint(self) -> bytes:
        """SHA-256 over the canonical state vector and delete set: equal iff same edits.

        Two documents holding the same Yjs items (same ids) and the same deletions are the
        same document, so equal fingerprints mean equal states whatever the byte order
        of ``doc.get_update()`` is.
        """
        h = hashlib.sha256(self.state_vector())
        for client, ranges in self.delete_set().items():
            h.update(f"|{client}:{ranges}".encode())
        return h.digest()

    def encoded_state(self) -> bytes:
        """The whole document as one Yjs v1 update (what ``Persist.state`` carries)."""
        return self._doc.get_update()

    def value(self) -> Any:
        """The machine's canonical application-level value."""
        return self.machine.value()

    # ----------------------------------------------------------------- events in

    def propose(self, proposal: Proposal) -> None:
        """Apply a client command locally now; never raises NotLeader.

        The result (a :class:`CommandRejected` when the machine refuses the command) goes
        to the next ``Ready.results``, with a ``Committed(Entry(0, n, proposal))`` where
        ``n`` counts this replica's proposals since it started. An edit is gossiped on the
        next :meth:`ready`; a read sends nothing. A retry of ``(client, seq)`` already
        answered by this replica (since it started) gets the same answer without
        re-applying.
        """
        result = self._execute(proposal)
        self.local_index += 1
        self._committed.append(Committed(Entry(0, self.local_index, proposal)))
        self._results.append(CommandResult(proposal, result))

    def _execute(self, proposal: Proposal) -> Any:
        client = proposal.client
        if client is not None:
            last = self._sessions.get(client)
            if last is not None and proposal.seq <= last[0]:
                return (
                    last[1]
                    if proposal.seq == last[0]
                    else CommandRejected("STALE", "older request")
                )
        ctx = EditContext(self.node_id, self.hlc.now(self.ticks * self.config.tick_ms))
        before = self._vector()
        self._txn_updates.clear()
        result: Any
        try:
            with self._doc.transaction():
                result = self.machine.apply(proposal.command, ctx)
        except CommandError as exc:
            if self._txn_updates:
                raise RuntimeError(
                    f"machine edited the document before rejecting a command ({exc})"
                ) from exc
            result = CommandRejected(exc.code, exc.message)
        if self._txn_updates:
            with self._doc.transaction():
                self._hlc_map[self.node_id] = [ctx.hlc.physical, ctx.hlc.logical]
            updates = self._take_updates()
            delta = updates[0] if len(updates) == 1 else merge_updates(*updates)
            if self._batches and not self._merged_since_local:
                # nothing merged since the batch's base: this edit depends only on it
                self._batches[-1].deltas.append(delta)
            else:
                self._batches.append(_Batch(encode_state_vector(before)))
                self._batches[-1].deltas.append(delta)
            self._merged_since_local = False
            self._dirty = True
            self.updates_applied["local"] += 1
        if client is not None:
            self._sessions[client] = (proposal.seq, result)
        return result

    def tick(self) -> None:
        """Advance the logical clock one tick; start an anti-entropy round when due."""
        self.ticks += 1
        if self._dirty and self.ticks - self._persisted_at >= self.config.anti_entropy_ticks:
            self._persist_due = True
        if not self.config.anti_entropy or not self.neighbours:
            return
        self.sync_elapsed += 1
        if self.sync_elapsed >= self.config.anti_entropy_ticks:
            self.sync_elapsed = 0
            target = self.rng.choice(self.neighbours)
            self._msgs.append(SyncRequest(self.node_id, target, self.state_vector()))

    def step(self, m: Message) -> None:
        """Handle one message. Raises :class:`ProtocolError` (document unchanged) if invalid."""
        self._validate(m)
        if isinstance(m, CrdtUpdate):
            base = self._parse_sv(m.base)
            ttl = min(m.ttl, self.config.gossip_ttl)
            self._receive(_Waiting(m.src, m.update, m.base, base, ttl, "gossip"))
        elif isinstance(m, SyncRequest):
            self._parse_sv(m.state_vector)
            self._msgs.append(
                SyncReply(
                    self.node_id,
                    m.src,
                    self._doc.get_update(m.state_vector),
                    self.state_vector(),
                    m.state_vector,
                )
            )
        elif isinstance(m, SyncReply):
            base = self._parse_sv(m.base)
            theirs = self._parse_sv(m.state_vector)
            self._receive(_Waiting(m.src, m.update, m.base, base, 0, "sync"))
            mine = self._vector()
            if any(clock > theirs.get(client, 0) for client, clock in mine.items()):
                self._msgs.append(
                    CrdtUpdate(
                        self.node_id, m.src, self._doc.get_update(m.state_vector), 1, m.state_vector
                    )
                )

    # ----------------------------------------------------------------- effects out

    def has_ready(self) -> bool:
        """True when :meth:`ready` has something for the driver."""
        return bool(
            self._msgs or self._committed or self._results or self._batches or self._persist_due
        )

    def ready(self) -> Ready:
        """Take pending effects: the document to persist first, then messages, then results."""
        batches = self._batches
        self._batches = []
        for batch in batches:
            ds = batch.deltas
            delta = ds[0] if len(ds) == 1 else merge_updates(*ds)
            self._gossip(delta, batch.base, self.config.gossip_ttl, exclude=None)
        persist = Persist()
        if self._dirty and (self._results or batches or self._persist_due):
            persist.state = self._doc.get_update()
            self._dirty = False
            self._persist_due = False
            self._persisted_at = self.ticks
        ready = Ready(persist, self._msgs, self._committed, results=self._results)
        self._msgs = []
        self._committed = []
        self._results = []
        return ready

    # ----------------------------------------------------------------- validation

    def _validate(self, m: Message) -> None:
        if m.dst != self.node_id:
            self._reject("wrong-destination", f"message for {m.dst!r} reached {self.node_id!r}")
        if m.src not in self.peers or m.src == self.node_id:
            self._reject("unknown-sender", f"{m.src!r} is not a peer of {self.node_id!r}")
        if not isinstance(m, CRDT_MESSAGES):
            self._reject("unknown-type", f"{type(m).__name__} is not a CRDT message")
        if isinstance(m, CrdtUpdate) and (
            not isinstance(m.ttl, int) or isinstance(m.ttl, bool) or m.ttl < 1
        ):
            self._reject("bad-field", f"ttl must be a positive int, got {m.ttl!r}")
        if isinstance(m, CrdtUpdate | SyncReply) and not isinstance(m.update, bytes):
            self._reject("bad-field", "update must be bytes")

    def _reject(self, reason: str, detail: str) -> NoReturn:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        raise ProtocolError(reason, detail)

    def _parse_sv(self, raw: object) -> dict[int, int]:
        if not isinstance(raw, bytes):
            self._reject("bad-state-vector", "state vector must be bytes")
        try:
            return decode_state_vector(raw)
        except ValueError as exc:
            self._reject("bad-state-vector", str(exc))

    # ----------------------------------------------------------------- merging

    def _receive(self, w: _Waiting) -> None:
        """Apply ``w`` if its base is covered, else park it (validated) and pull."""
        try:
            precheck_update(w.update)
        except ValueError as exc:
            self._reject("bad-update", str(exc))
        if not covers(self._vector(), w.base_vector):
            try:
                get_state(w.update)  # decodes the whole update: refuse garbage now
            except Exception as exc:
                self._reject("bad-update", f"{type(exc).__name__}: {exc}")
            self._park(w)
            return
        if self._merge(w.update, w.kind):
            if w.ttl > 1:
                self._gossip(w.update, w.base, w.ttl - 1, exclude=w.src)
            self._drain()

    def _park(self, w: _Waiting) -> None:
        if self.config.max_buffered == 0:
            self.updates_applied["buffer-dropped"] += 1
        else:
            if len(self._waiting) >= self.config.max_buffered:
                self._waiting.pop(0)
                self.updates_applied["buffer-dropped"] += 1
            self._waiting.append(w)
            self.updates_applied["buffered"] += 1
        if self.config.anti_entropy:
            last = self._last_pull.get(w.src)
            if last is None or self.ticks - last >= self.config.pull_ticks:
                self._last_pull[w.src] = self.ticks
                self._msgs.append(SyncRequest(self.node_id, w.src, self.state_vector()))

    def _drain(self) -> None:
        """Apply every parked update whose base is now covered (repeat until none is)."""
        progress = True
        while progress and self._waiting:
            progress = False
            mine = self._vector()
            for i, w in enumerate(self._waiting):
                if covers(mine, w.base_vector):
                    del self._waiting[i]
                    try:
                        new = self._merge(w.update, w.kind)
                    except ProtocolError:
                        new = False  # counted in rejected; nobody to raise to now
                    if new and w.ttl > 1:
                        self._gossip(w.update, w.base, w.ttl - 1, exclude=w.src)
                    progress = True
                    break

    def _merge(self, update: bytes, kind: str) -> bool:
        """Apply a remote update whose base is covered; True when it brought anything new."""
        self._txn_updates.clear()
        try:
            self._doc.apply_update(update)
        except Exception as exc:
            if self._take_updates():
                # The update integrated and an observer (the machine's) failed afterwards:
                # that is a bug in the machine, not a bad message.
                raise RuntimeError(f"observer failed while merging an update: {exc}") from exc
            # pycrdt raises before integrating anything when an update does not decode, so
            # the document is unchanged (tests/core/test_crdt_core.py checks this on fuzzed input).
            self._reject("bad-update", f"{type(exc).__name__}: {exc}")
        if not self._take_updates():
            self.updates_applied[f"{kind}-duplicate"] += 1
            return False
        self.updates_applied[f"{kind}-new"] += 1
        self._dirty = True
        self._merged_since_local = True
        return True

    def _gossip(self, update: bytes, base: bytes, ttl: int, exclude: NodeId | None) -> None:
        targets = [n for n in self.neighbours if n != exclude]
        k = min(self.config.gossip_fanout, len(targets))
        for dst in self.rng.sample(targets, k):
            self._msgs.append(CrdtUpdate(self.node_id, dst, update, ttl, base))

    def _take_updates(self) -> list[bytes]:
        updates = [u for u in self._txn_updates if u]
        self._txn_updates.clear()
        return updates

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._txn_updates.append(event.update)

    def _on_hlc_event(self, event: Any) -> None:
        changes = cast(Any, event).keys
        if not isinstance(changes, dict):
            return
        for change in changes.values():
            raw = change.get("newValue") if isinstance(change, dict) else None
            if isinstance(raw, list) and len(raw) == 2:
                physical, logical = exact_int(raw[0]), exact_int(raw[1])
                if physical is not None and logical is not None and min(physical, logical) >= 0:
                    self.hlc.update((physical, logical))
