"""The sans-IO PBFT replica (Castro and Liskov, OSDI '99 / TOCS '02, signature variant).

One :class:`PbftCore` is one replica of ``n = 3f + 1`` (or more). It never touches a
socket or a clock: frames arrive through :meth:`PbftCore.step`, time through
:meth:`PbftCore.tick`, and effects leave through :meth:`PbftCore.ready` — a
:class:`PbftReady` whose ``persist.state`` must be durable before its ``messages`` are sent.

Normal case: a client's signed REQUEST reaches the primary of the current view (a backup
forwards it and starts its view-change timer); the primary batches waiting requests into a
PRE-PREPARE that assigns a sequence number; backups multicast PREPARE; a replica with the
pre-prepare and ``q - 1`` matching prepares from backups is *prepared* and multicasts
COMMIT; ``q`` matching commits make the batch *committed*, and committed batches execute
in sequence order against the replica's :class:`~ruflo_consensus.statemachine.SessionTable`
(exactly once per ``(client, timestamp)``). Every replica sends the client a signed REPLY;
the client accepts ``f + 1`` matching ones. ``q = ⌈(n + f + 1) / 2⌉`` (``2f + 1`` when
``n = 3f + 1``).

Checkpoints: every ``checkpoint_interval`` sequence numbers a replica multicasts the digest
of its state; ``q`` matching CHECKPOINTs are a *stable checkpoint* with a proof. It moves
the low watermark ``h``; the replica accepts sequence numbers in ``(h, h + window]`` only
and forgets everything at or below ``h``. A replica that learns of a stable checkpoint it
has not executed to fetches the state (FETCH-STATE / STATE, checked against the proof).

View change: a backup whose oldest waiting request has not executed within the timeout
multicasts VIEW-CHANGE for ``v + 1`` with its stable checkpoint proof and its prepared
certificates. The new primary collects ``q`` valid ones and multicasts NEW-VIEW with them
and the pre-prepares they imply (each prepared request re-proposed at its sequence number,
null requests in the gaps); every backup recomputes those pre-prepares from the
view-change messages and accepts the new view only if they match. ``f + 1`` view changes
for higher views make a replica join; the timeout doubles on consecutive view changes.

Every message is a signed envelope (:mod:`.messages`), verified before it counts. Anything
invalid raises :class:`~ruflo_consensus.core.base.ProtocolError`, is counted in
:attr:`PbftCore.rejected` by reason, and changes no state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ...canonical import normalize
from ...statemachine import (
    CommandError,
    CommandRejected,
    SessionTable,
    StateMachine,
    encode_result,
    pack,
)
from ..base import (
    Committed,
    Entry,
    Message,
    NodeId,
    Proposal,
    ProposalDropped,
    ProtocolError,
    Ready,
    Role,
    RoleChange,
)
from .auth import Keyring, Signer
from .messages import (
    CHECKPOINT,
    COMMIT,
    COMMIT_CERT,
    FETCH_STATE,
    NEW_VIEW,
    PRE_PREPARE,
    PREPARE,
    READ_REPLY,
    REPLY,
    STATE,
    STATUS,
    VIEW_CHANGE,
    Checkpoint,
    CommitCert,
    FetchState,
    NewView,
    PbftFrame,
    PreparedCert,
    PrePrepare,
    ReadRequest,
    Request,
    Signed,
    State,
    Status,
    ViewChange,
    Vote,
    batch_digest,
    decode_body,
    open_envelope,
    seal,
    state_digest,
)

__all__ = ["PbftConfig", "PbftCore", "PbftReady", "quorum_size"]

MAX_FRAME_ITEMS = 4096
_STATUS_ITEMS = 96
_CATCHUP_SEQS = 16


@dataclass(frozen=True)
class PbftConfig:
    """Tunables of a PBFT replica (all counts; times in ticks of ``tick_ms``).

    ``checkpoint_interval`` (K) and ``window`` (L, the distance between the low and high
    watermarks) follow the paper's defaults of 128 and 256. ``view_change_ticks`` is the
    base view-change timeout; it doubles on every consecutive view change, up to
    ``2 ** max_backoff`` times. ``max_batch`` requests go into one pre-prepare and at most
    ``max_inflight`` batches are ordered but not yet executed. ``status_ticks`` is how often
    a replica with unfinished work tells its peers where it is (they retransmit what it
    misses); an idle one does so every ``idle_status_ticks``.
    """

    checkpoint_interval: int = 128
    window: int = 256
    max_batch: int = 64
    max_inflight: int = 4
    view_change_ticks: int = 20
    max_backoff: int = 5
    status_ticks: int = 5
    idle_status_ticks: int = 20
    fetch_retry_ticks: int = 10
    max_waiting: int = 10_000
    tick_ms: int = 10

    def __post_init__(self) -> None:
        for name in (
            "checkpoint_interval",
            "window",
            "max_batch",
            "max_inflight",
            "view_change_ticks",
            "status_ticks",
            "idle_status_ticks",
            "fetch_retry_ticks",
            "max_waiting",
            "tick_ms",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PbftConfig.{name} must be at least 1")
        if self.window < self.checkpoint_interval:
            raise ValueError("PbftConfig.window must be at least checkpoint_interval")
        if self.max_backoff < 0:
            raise ValueError("PbftConfig.max_backoff must be >= 0")


def quorum_size(n: int) -> tuple[int, int]:
    """``(f, q)`` for ``n`` replicas: tolerated faults and the quorum size."""
    f = (n - 1) // 3
    return f, (n + f + 2) // 2


@dataclass(slots=True)
class PbftReady(Ready):
    """A :class:`~ruflo_consensus.core.base.Ready` with PBFT's extra reports.

    ``checkpoints`` lists ``(seq, state digest)`` of the checkpoints this replica took;
    ``state_transfers`` the ``(seq, state digest)`` of checkpoints it installed from peers.
    The core executes requests itself: ``committed`` reports what it executed, in order
    (several entries share a sequence number when the primary batched them; a null
    request is an entry without a proposal) — the driver must not apply them again.
    """

    checkpoints: list[tuple[int, bytes]] = field(default_factory=list)
    state_transfers: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class _Slot:
    """Everything a replica holds about one sequence number in its window."""

    seq: int
    pp: PrePrepare | None = None
    pp_env: Signed | None = None
    pp_view: int = -1
    # (kind, view, signer) -> digest voted; (kind, view, digest) -> {signer: envelope}
    cast: dict[tuple[int, int, str], bytes] = field(default_factory=dict)
    tally: dict[tuple[int, int, bytes], dict[str, Signed]] = field(default_factory=dict)
    sent_prepare: Signed | None = None
    sent_commit: Signed | None = None
    cert: PreparedCert | None = None
    cert_view: int = -1
    committed: bytes | None = None
    committed_pp: Signed | None = None
    commit_proof: tuple[Signed, ...] = ()
    cert_env: Signed | None = None
    durable: bytes | None = None


def _encode_result(result: Any) -> list[Any]:
    """:func:`~ruflo_consensus.statemachine.encode_result` in canonical form, as replies
    are signed and matched by their bytes (a value with no canonical form travels as its
    ``repr``)."""
    try:
        return normalize(encode_result(result))  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return encode_result(repr(result))


class PbftCore:
    """One PBFT replica. See the module docstring for the protocol.

    ``replicas`` is the ordered replica list (the primary of view ``v`` is
    ``replicas[v % n]``); ``signer`` holds this replica's key; ``keyring`` the public keys
    of every replica and client; ``machine`` the state machine it executes into (wrapped in
    a :class:`SessionTable`). ``durable`` is the last ``persist.state`` this replica wrote,
    to restart from after a crash. ``read_only`` says which commands the read-only fast path
    may run without ordering (None: no fast path, every READ is rejected); it must only
    accept commands that change nothing.
    """

    def __init__(
        self,
        node_id: NodeId,
        replicas: Sequence[NodeId],
        signer: Signer,
        keyring: Keyring,
        machine: StateMachine,
        config: PbftConfig | None = None,
        durable: bytes | None = None,
        read_only: Callable[[Any], bool] | None = None,
    ) -> None:
        if node_id not in replicas:
            raise ValueError(f"{node_id} is not one of the replicas")
        if len(set(replicas)) != len(replicas):
            raise ValueError("replica names must be unique")
        if signer.name != node_id:
            raise ValueError("the signer must sign as this replica")
        if keyring.replica_key(node_id) != signer.public_key:
            raise ValueError("the keyring does not hold this replica's public key")
        self.node_id = node_id
        self.replicas: tuple[NodeId, ...] = tuple(replicas)
        self.others: tuple[NodeId, ...] = tuple(r for r in replicas if r != node_id)
        self.n = len(self.replicas)
        self.f, self.q = quorum_size(self.n)
        self.signer = signer
        self.keyring = keyring
        self.config = config or PbftConfig()
        self.table = SessionTable(machine)
        self.read_only = read_only
        self.rejected: dict[str, int] = {}
        self.counters: dict[str, int] = {
            "view-changes": 0,
            "new-views": 0,
            "state-transfers": 0,
            "checkpoints-stable": 0,
            "batches": 0,
            "executed-requests": 0,
            "commit-certs-used": 0,
        }
        # protocol state
        self.view = 0
        self.active = True
        self._vc_count = 0  # consecutive view changes without progress
        self._ticks = 0
        self._h = 0
        self._stable_digest = state_digest(self.table.snapshot())
        self._stable_proof: tuple[Signed, ...] = ()
        self._stable_snapshot: bytes | None = self.table.snapshot()
        self._last_exec = 0
        self._next_seq = 1
        self._slots: dict[int, _Slot] = {}
        self._own_cps: dict[int, tuple[bytes, bytes]] = {0: (self._stable_digest, b"")}
        self._cp_votes: dict[int, dict[str, tuple[bytes, Signed]]] = {}
        self._own_cp_env: dict[int, Signed] = {}
        # client -> (timestamp, tick first seen in this view, envelope)
        self._waiting: dict[str, tuple[int, int, Signed]] = {}
        self._ordered: dict[str, int] = {}
        self._vc_by_signer: dict[str, tuple[ViewChange, Signed]] = {}
        self._own_vc: Signed | None = None
        self._nv_env: Signed | None = None
        self._nv_deadline: int | None = None
        self._fetch: tuple[int, bytes] | None = None
        self._fetch_at = 0
        self._fetch_turn = 0
        self._state_env: Signed | None = None
        self._served: dict[str, int] = {}
        self._last_status = 0
        self._exec_at_status = 0
        self._peer_exec: dict[str, int] = {}
        self._valid_vcs: set[bytes] = set()
        # pending effects
        self._messages: list[Message] = []
        self._committed: list[Committed] = []
        self._role_changes: list[RoleChange] = []
        self._checkpoints: list[tuple[int, bytes]] = []
        self._transfers: list[tuple[int, bytes]] = []
        self._dirty = False
        self._reported: tuple[Role, int] = (self.role, self.view)
        if durable is not None:
            self._restore(durable)

    # ------------------------------------------------------------------ properties

    @property
    def role(self) -> Role:
        """Primary, backup, or view-changing (between VIEW-CHANGE and NEW-VIEW)."""
        if not self.active:
            return Role.VIEW_CHANGING
        return Role.PRIMARY if self._primary(self.view) == self.node_id else Role.BACKUP

    @property
    def term(self) -> int:
        """The current view."""
        return self.view

    @property
    def leader(self) -> NodeId | None:
        """The primary of the current view (None while changing views)."""
        return self._primary(self.view) if self.active else None

    @property
    def last_executed(self) -> int:
        """The highest sequence number executed (or installed by state transfer)."""
        return self._last_exec

    @property
    def applied(self) -> int:
        """Same as :attr:`last_executed` (the name the simulator's reports use)."""
        return self._last_exec

    @property
    def commit(self) -> int:
        """Same as :attr:`last_executed`."""
        return self._last_exec

    @property
    def stable_checkpoint(self) -> tuple[int, bytes]:
        """``(seq, state digest)`` of the last stable checkpoint (the low watermark)."""
        return self._h, self._stable_digest

    @property
    def stable_proof(self) -> tuple[Signed, ...]:
        """The ``q`` CHECKPOINT messages proving the stable checkpoint (empty at 0)."""
        return self._stable_proof

    @property
    def highest_seq(self) -> int:
        """The highest sequence number this replica holds a message for."""
        return max(self._slots, default=self._last_exec)

    def primary_of(self, view: int) -> NodeId:
        """The primary of ``view``."""
        return self._primary(view)

    def state_digest(self) -> bytes:
        """The digest of the replica's current state (as a checkpoint would carry it)."""
        return state_digest(self.table.snapshot())

    def _primary(self, view: int) -> NodeId:
        return self.replicas[view % self.n]

    # ------------------------------------------------------------------ events in

    def propose(self, proposal: Proposal) -> None:
        """Submit a client's signed request (``proposal.command`` from ``sign_request``).

        PBFT clients sign their requests, so a replica cannot make one up: the command must
        be the client's :class:`Signed` envelope, and ``client``/``seq`` must match its
        signer and timestamp. A backup forwards it to the primary. Raises
        :class:`ProposalDropped` when the envelope is missing or does not check.
        """
        env = proposal.command
        if not isinstance(env, Signed):
            raise ProposalDropped("a PBFT proposal carries the client's signed request")
        try:
            req = open_envelope(env, self.keyring)
        except ProtocolError as exc:
            self._count(exc.reason)
            raise ProposalDropped(f"the signed request does not check: {exc}") from None
        if not isinstance(req, Request) or (req.signer, req.t) != (
            proposal.client,
            proposal.seq,
        ):
            raise ProposalDropped("the signed request does not match the proposal")
        self._on_request(req, env)

    def step(self, message: Message) -> None:
        """Handle one frame; every envelope in it is checked and handled on its own.

        Raises the first envelope's :class:`ProtocolError` after handling the rest; every
        rejected envelope is counted in :attr:`rejected`.
        """
        if not isinstance(message, PbftFrame) or not isinstance(message.items, tuple):
            self._count("malformed")
            raise ProtocolError("malformed", "a PBFT replica takes PbftFrame messages")
        if not message.items or len(message.items) > MAX_FRAME_ITEMS:
            self._count("malformed")
            raise ProtocolError("malformed", f"a frame holds 1..{MAX_FRAME_ITEMS} envelopes")
        first: ProtocolError | None = None
        for env in message.items:
            try:
                self._handle(env)
            except ProtocolError as exc:
                self._count(exc.reason)
                if first is None:
                    first = exc
        if first is not None:
            raise first

    def tick(self) -> None:
        """One tick: view-change timers, status/retransmission, state-fetch retries."""
        self._ticks += 1
        now = self._ticks
        cfg = self.config
        if self.active:
            if self._waiting and self._primary(self.view) != self.node_id:
                oldest = min(since for _, since, _ in self._waiting.values())
                if now - oldest >= self._timeout():
                    self._start_view_change(self.view + 1)
        elif self._nv_deadline is not None and now >= self._nv_deadline:
            self._start_view_change(self.view + 1)
        if self._fetch is not None and now - self._fetch_at >= cfg.fetch_retry_ticks:
            self._send_fetch()
        busy = (
            not self.active
            or bool(self._waiting)
            or self._fetch is not None
            or any(s > self._last_exec for s in self._slots)
        )
        interval = cfg.status_ticks if busy else cfg.idle_status_ticks
        if now - self._last_status >= interval:
            self._last_status = now
            # a replica that executed something since its last status is not stuck
            if not busy or self._last_exec == self._exec_at_status or not self.active:
                self._send_status()
            self._exec_at_status = self._last_exec

    def _timeout(self) -> int:
        return int(self.config.view_change_ticks) << min(self._vc_count, self.config.max_backoff)

    # ------------------------------------------------------------------ effects out

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return effects."""
        return bool(
            self._messages
            or self._committed
            or self._checkpoints
            or self._transfers
            or self._dirty
            or self._reported != (self.role, self.view)
        )

    def ready(self) -> PbftReady:
        """Take the pending effects: persist ``state`` first, then send, then report."""
        rd = PbftReady()
        if self._dirty:
            rd.persist.state = self._durable()
            self._dirty = False
        now = (self.role, self.view)
        if now != self._reported:
            self._reported = now
            rd.role_changes.append(RoleChange(self.node_id, now[0], self.view, self.leader))
        rd.messages, self._messages = _coalesce(self._messages), []
        rd.committed, self._committed = self._committed, []
        rd.checkpoints, self._checkpoints = self._checkpoints, []
        rd.state_transfers, self._transfers = self._transfers, []
        return rd

    # ------------------------------------------------------------------ helpers

    def _count(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _send(self, dst: NodeId, *items: Signed) -> None:
        self._messages.append(PbftFrame(self.node_id, dst, tuple(items)))

    def _broadcast(self, *items: Signed) -> None:
        frame_items = tuple(items)
        for dst in self.others:
            self._messages.append(PbftFrame(self.node_id, dst, frame_items))

    def _slot(self, seq: int) -> _Slot:
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = _Slot(seq)
        return slot

    def _touch(self, slot: _Slot) -> None:
        slot.durable = None
        self._dirty = True

    def _check_view(self, view: int) -> None:
        if view < self.view:
            raise ProtocolError("old-view", f"view {view} < current view {self.view}")
        if view > self.view:
            raise ProtocolError("future-view", f"view {view} > current view {self.view}")
        if not self.active:
            raise ProtocolError("view-changing", f"changing to view {self.view}")

    def _check_window(self, seq: int) -> None:
        if seq <= self._h:
            raise ProtocolError("below-watermark", f"seq {seq} <= stable checkpoint {self._h}")
        if seq > self._h + self.config.window:
            raise ProtocolError(
                "above-window", f"seq {seq} > high watermark {self._h + self.config.window}"
            )

    def _open(self, env: Signed, want: type, reason: str) -> Any:
        payload = open_envelope(env, self.keyring)
        if type(payload) is not want:
            raise ProtocolError(reason, f"expected a {want.__name__}")
        return payload

    def _open_batch(self, pp: PrePrepare) -> list[Request]:
        """The pre-prepare's requests, each with a valid client signature; digest checked."""
        reqs: list[Request] = []
        clients: set[str] = set()
        for env in pp.requests:
            req = self._open(env, Request, "bad-batch")
            if req.signer in clients:
                raise ProtocolError("bad-batch", f"two requests of {req.signer} in one batch")
            clients.add(req.signer)
            reqs.append(req)
        if batch_digest([e.body for e in pp.requests]) != pp.digest:
            raise ProtocolError("bad-digest", f"pre-prepare {pp.view}/{pp.seq}")
        return reqs

    def _check_proof(self, seq: int, digest: bytes, proof: Sequence[Signed]) -> None:
        """Raise unless ``proof`` holds ``q`` distinct signers' checkpoints of ``(seq, digest)``."""
        signers: set[str] = set()
        for env in proof:
            cp = self._open(env, Checkpoint, "bad-checkpoint-proof")
            if cp.seq != seq or cp.state_digest != digest:
                raise ProtocolError("bad-checkpoint-proof", f"checkpoint {cp.seq} does not match")
            signers.add(cp.signer)
        if len(signers) < self.q:
            raise ProtocolError(
                "bad-checkpoint-proof", f"{len(signers)} checkpoints of {seq}, need {self.q}"
            )

    # ------------------------------------------------------------------ dispatch

    def _handle(self, env: Signed) -> None:
        payload = open_envelope(env, self.keyring)
        kind = type(payload)
        if kind is Vote:
            self._on_vote(payload, env)  # type: ignore[arg-type]
        elif kind is PrePrepare:
            self._on_pre_prepare(payload, env)  # type: ignore[arg-type]
        elif kind is Request:
            self._on_request(payload, env)  # type: ignore[arg-type]
        elif kind is ReadRequest:
            self._on_read(payload)  # type: ignore[arg-type]
        elif kind is Checkpoint:
            self._on_checkpoint(payload, env)  # type: ignore[arg-type]
        elif kind is Status:
            self._on_status(payload)  # type: ignore[arg-type]
        elif kind is ViewChange:
            self._on_view_change(payload, env)  # type: ignore[arg-type]
        elif kind is NewView:
            self._on_new_view(payload, env)  # type: ignore[arg-type]
        elif kind is CommitCert:
            self._on_commit_cert(payload)  # type: ignore[arg-type]
        elif kind is FetchState:
            self._on_fetch(payload)  # type: ignore[arg-type]
        elif kind is State:
            self._on_state(payload)  # type: ignore[arg-type]
        else:
            raise ProtocolError("unexpected-kind", f"a replica does not take {kind.__name__}")

    # ------------------------------------------------------------------ requests

    def _on_request(self, req: Request, env: Signed) -> None:
        last = self.table.sessions.get(req.signer)
        if last is not None and req.t <= last[0]:
            if req.t == last[0]:
                self._reply(req.signer, req.t, last[1])
            return
        known = self._waiting.get(req.signer)
        if known is not None and known[0] > req.t:
            return  # an older request of a client that has moved on
        if known is None or known[0] < req.t:
            if known is None and len(self._waiting) >= self.config.max_waiting:
                raise ProtocolError("overloaded", "too many clients waiting")
            self._waiting[req.signer] = (req.t, self._ticks, env)
        if not self.active:
            return
        if self._primary(self.view) == self.node_id:
            self._try_batch()
        else:
            self._send(self._primary(self.view), env)

    def _on_read(self, req: ReadRequest) -> None:
        """The read-only fast path: run the command on the executed state now, and answer.

        The reply names the sequence number the state is at; a client accepts a result once
        ``q`` replicas sent the same result *at the same sequence number* (and, for this to
        be linearizable, accepts writes only on ``q`` matching replies too).
        """
        if self.read_only is None or not self.read_only(req.op):
            raise ProtocolError("not-read-only", "this command may not take the fast path")
        try:
            result = self.table.machine.apply(req.op)
        except CommandError as exc:
            result = CommandRejected(exc.code, exc.message)
        wire = _encode_result(result)
        env = seal(self.signer, READ_REPLY, self.view, req.signer, req.t, self._last_exec, wire)
        self._send(req.signer, env)

    def _try_batch(self) -> None:
        """Primary: order waiting requests, at most ``max_inflight`` batches ahead."""
        cfg = self.config
        while (
            self._next_seq - 1 - self._last_exec < cfg.max_inflight
            and self._next_seq <= self._h + cfg.window
        ):
            batch: list[Signed] = []
            for client, (t, _, env) in self._waiting.items():
                if self._ordered.get(client, 0) < t:
                    batch.append(env)
                    self._ordered[client] = t
                    if len(batch) >= cfg.max_batch:
                        break
            if not batch:
                return
            seq = max(self._next_seq, self._last_exec + 1)
            self._next_seq = seq + 1
            digest = batch_digest([e.body for e in batch])
            env = seal(self.signer, PRE_PREPARE, self.view, seq, digest, batch)
            pp = decode_body(env.body)
            assert isinstance(pp, PrePrepare)
            self.counters["batches"] += 1
            slot = self._slot(seq)
            slot.pp, slot.pp_env, slot.pp_view = pp, env, self.view
            self._touch(slot)
            self._broadcast(env)
            self._check_prepared(slot)

    def _reply(self, client: str, t: int, result: Any) -> None:
        env = seal(self.signer, REPLY, self.view, client, t, _encode_result(result))
        self._send(client, env)

    # ------------------------------------------------------------------ normal case

    def _on_pre_prepare(self, pp: PrePrepare, env: Signed) -> None:
        self._check_view(pp.view)
        if pp.signer != self._primary(pp.view):
            raise ProtocolError("not-primary", f"{pp.signer} is not the primary of {pp.view}")
        self._check_window(pp.seq)
        slot = self._slots.get(pp.seq)
        if slot is not None and slot.pp is not None and slot.pp_view == pp.view:
            if slot.pp.digest == pp.digest:
                return  # a retransmission
            raise ProtocolError("conflicting-pre-prepare", f"{pp.view}/{pp.seq} already assigned")
        self._open_batch(pp)
        slot = self._slot(pp.seq)
        slot.pp, slot.pp_env, slot.pp_view = pp, env, pp.view
        self._touch(slot)
        if pp.signer != self.node_id:
            self._vote(slot, PREPARE, pp.view, pp.digest)
        self._check_prepared(slot)

    def _vote(self, slot: _Slot, kind: int, view: int, digest: bytes) -> None:
        env = seal(self.signer, kind, view, slot.seq, digest)
        slot.cast[(kind, view, self.node_id)] = digest
        slot.tally.setdefault((kind, view, digest), {})[self.node_id] = env
        if kind == PREPARE:
            slot.sent_prepare = env
        else:
            slot.sent_commit = env
        self._touch(slot)
        self._broadcast(env)

    def _on_vote(self, v: Vote, env: Signed) -> None:
        self._check_view(v.view)
        self._check_window(v.seq)
        if v.kind == PREPARE and v.signer == self._primary(v.view):
            raise ProtocolError("primary-prepare", "the primary does not send prepares")
        slot = self._slots.get(v.seq)
        key = (v.kind, v.view, v.signer)
        if slot is not None:
            prev = slot.cast.get(key)
            if prev is not None:
                if prev == v.digest:
                    return  # a retransmission
                raise ProtocolError("conflicting-vote", f"{v.signer} voted twice for {v.seq}")
        slot = self._slot(v.seq)
        slot.cast[key] = v.digest
        slot.tally.setdefault((v.kind, v.view, v.digest), {})[v.signer] = env
        if v.kind == PREPARE:
            self._check_prepared(slot)
        else:
            self._check_committed(slot)

    def _check_prepared(self, slot: _Slot) -> None:
        pp = slot.pp
        if pp is None or slot.pp_view != self.view or not self.active:
            return
        if slot.cert_view < self.view:
            votes = slot.tally.get((PREPARE, self.view, pp.digest), {})
            if len(votes) < self.q - 1:
                return
            assert slot.pp_env is not None
            chosen = tuple(votes[s] for s in sorted(votes)[: self.q - 1])
            slot.cert = PreparedCert(slot.pp_env, chosen)
            slot.cert_view = self.view
            self._touch(slot)
        if slot.sent_commit is None or slot.cast.get((COMMIT, self.view, self.node_id)) is None:
            self._vote(slot, COMMIT, self.view, pp.digest)
        self._check_committed(slot)

    def _check_committed(self, slot: _Slot) -> None:
        if slot.committed is not None or slot.cert is None or slot.cert_view != self.view:
            return
        pp = slot.pp
        assert pp is not None
        votes = slot.tally.get((COMMIT, self.view, pp.digest))
        if votes is None or len(votes) < self.q:
            return
        slot.committed = pp.digest
        slot.committed_pp = slot.cert.pre_prepare
        slot.commit_proof = tuple(votes[s] for s in sorted(votes)[: self.q])
        self._touch(slot)
        self._execute_ready()

    def _on_commit_cert(self, cc: CommitCert) -> None:
        """A relayed proof that ``seq`` committed: execute it even if we missed the votes."""
        if cc.seq <= self._last_exec or cc.seq <= self._h:
            return
        self._check_window(cc.seq)
        pp = self._open(cc.pre_prepare, PrePrepare, "bad-certificate")
        if pp.seq != cc.seq or pp.signer != self._primary(pp.view):
            raise ProtocolError("bad-certificate", "the pre-prepare does not match")
        self._open_batch(pp)
        signers: set[str] = set()
        for env in cc.commits:
            v = self._open(env, Vote, "bad-certificate")
            if (v.kind, v.view, v.seq, v.digest) != (COMMIT, pp.view, pp.seq, pp.digest):
                raise ProtocolError("bad-certificate", f"a commit of {v.signer} does not match")
            signers.add(v.signer)
        if len(signers) < self.q:
            raise ProtocolError("bad-certificate", f"{len(signers)} commits, need {self.q}")
        slot = self._slots.get(cc.seq)
        if slot is not None and slot.committed is not None:
            if slot.committed != pp.digest:
                # q commits for two batches at one sequence number: more than f are lying
                raise ProtocolError("conflicting-certificate", f"seq {cc.seq}")
            return
        slot = self._slot(cc.seq)
        slot.committed = pp.digest
        slot.committed_pp = cc.pre_prepare
        slot.commit_proof = cc.commits
        self.counters["commit-certs-used"] += 1
        self._touch(slot)
        self._execute_ready()

    def _commit_cert(self, slot: _Slot) -> Signed | None:
        if slot.committed is None or slot.committed_pp is None:
            return None
        if slot.cert_env is None:
            slot.cert_env = seal(
                self.signer, COMMIT_CERT, slot.seq, slot.committed_pp, slot.commit_proof
            )
        return slot.cert_env

    # ------------------------------------------------------------------ execution

    def _execute_ready(self) -> None:
        progressed = False
        while True:
            slot = self._slots.get(self._last_exec + 1)
            if slot is None or slot.committed_pp is None:
                break
            pp = decode_body(slot.committed_pp.body)
            assert isinstance(pp, PrePrepare)
            self._execute(slot.seq, pp)
            progressed = progressed or bool(pp.requests)
        if progressed and self.active:
            self._vc_count = 0
        if self.active and self._primary(self.view) == self.node_id:
            self._try_batch()

    def _execute(self, seq: int, pp: PrePrepare) -> None:
        if not pp.requests:
            self._committed.append(Committed(Entry(pp.view, seq, None)))
        for env in pp.requests:
            req = decode_body(env.body)
            assert isinstance(req, Request)
            result = self.table.apply(req.signer, req.t, req.op)
            self._committed.append(
                Committed(Entry(pp.view, seq, Proposal(req.signer, req.t, req.op)))
            )
            self.counters["executed-requests"] += 1
            last = self.table.sessions.get(req.signer)
            if last is not None and last[0] == req.t:
                self._reply(req.signer, req.t, result)
            self._forget_request(req.signer, req.t)
        self._last_exec = seq
        if seq % self.config.checkpoint_interval == 0:
            self._take_checkpoint(seq)

    def _forget_request(self, client: str, t: int) -> None:
        known = self._waiting.get(client)
        if known is not None and known[0] <= t:
            del self._waiting[client]
        if self._ordered.get(client, 0) <= t:
            self._ordered.pop(client, None)

    # ------------------------------------------------------------------ checkpoints

    def _take_checkpoint(self, seq: int) -> None:
        snapshot = self.table.snapshot()
        digest = state_digest(snapshot)
        self._own_cps[seq] = (digest, snapshot)
        self._checkpoints.append((seq, digest))
        env = seal(self.signer, CHECKPOINT, seq, digest)
        self._own_cp_env[seq] = env
        self._broadcast(env)
        self._record_checkpoint(Checkpoint(self.node_id, seq, digest), env)

    def _on_checkpoint(self, cp: Checkpoint, env: Signed) -> None:
        if cp.seq <= self._h:
            return  # already stable here
        if cp.seq % self.config.checkpoint_interval:
            raise ProtocolError("bad-checkpoint", f"{cp.seq} is not a checkpoint number")
        votes = self._cp_votes.get(cp.seq)
        if votes is not None:
            prev = votes.get(cp.signer)
            if prev is not None:
                if prev[0] == cp.state_digest:
                    return
                raise ProtocolError("conflicting-checkpoint", f"{cp.signer} at {cp.seq}")
        self._record_checkpoint(cp, env)

    def _record_checkpoint(self, cp: Checkpoint, env: Signed) -> None:
        votes = self._cp_votes.setdefault(cp.seq, {})
        votes[cp.signer] = (cp.state_digest, env)
        # each signer holds a bounded share: a liar flooding checkpoints for many future
        # numbers evicts its own oldest claims, never the others' votes
        limit = 2 * (self.config.window // self.config.checkpoint_interval) + 4
        mine = [s for s, v in self._cp_votes.items() if cp.signer in v]
        if len(mine) > limit:
            drop = min(s for s in mine if s != cp.seq)
            del self._cp_votes[drop][cp.signer]
            if not self._cp_votes[drop]:
                del self._cp_votes[drop]
        matching = sorted((s, e) for s, (d, e) in votes.items() if d == cp.state_digest)
        if len(matching) >= self.q:
            proof = tuple(e for _, e in matching[: self.q])
            self._stabilize(cp.seq, cp.state_digest, proof)

    def _stabilize(self, seq: int, digest: bytes, proof: tuple[Signed, ...]) -> None:
        if seq <= self._h:
            return
        gap = range(self._last_exec + 1, seq + 1)
        if gap and all(s in self._slots and self._slots[s].committed for s in gap):
            # we hold everything up to it: execute (our own checkpoint then stabilises it)
            self._execute_ready()
            if seq <= self._h:
                return
        own = self._own_cps.get(seq)
        self._h, self._stable_digest, self._stable_proof = seq, digest, proof
        self._stable_snapshot = own[1] if own is not None and own[0] == digest else None
        self._state_env = None
        self.counters["checkpoints-stable"] += 1
        for s in [s for s in self._slots if s <= seq]:
            del self._slots[s]
        for s in [s for s in self._own_cps if s < seq]:
            del self._own_cps[s]
        for s in [s for s in self._own_cp_env if s < seq]:
            del self._own_cp_env[s]
        for s in [s for s in self._cp_votes if s <= seq]:
            del self._cp_votes[s]
        if self._last_exec < seq or self._stable_snapshot is None:
            # behind the stable checkpoint (or our state differs from it): fetch the state
            self._fetch = (seq, digest)
            self._fetch_at = -(10**9)
        self._next_seq = max(self._next_seq, seq + 1)
        self._dirty = True
        if self.active and self._primary(self.view) == self.node_id:
            self._try_batch()

    def _send_fetch(self) -> None:
        assert self._fetch is not None
        seq, _ = self._fetch
        sources = [
            p.signer
            for p in (decode_body(e.body) for e in self._stable_proof)
            if p.signer != self.node_id
        ] or list(self.others)
        if not sources:
            return
        target = sources[self._fetch_turn % len(sources)]
        self._fetch_turn += 1
        self._fetch_at = self._ticks
        self._send(target, seal(self.signer, FETCH_STATE, seq))

    def _on_fetch(self, fs: FetchState) -> None:
        if self._stable_snapshot is None or self._h < fs.seq or self._h == 0:
            return
        if self._served.get(fs.signer) == self._ticks:
            return  # one state per requester per tick
        self._served[fs.signer] = self._ticks
        if self._state_env is None:
            self._state_env = seal(
                self.signer, STATE, self._h, self._stable_snapshot, self._stable_proof
            )
        self._send(fs.signer, self._state_env)

    def _on_state(self, st: State) -> None:
        target = self._fetch[0] if self._fetch is not None else None
        if st.seq <= self._last_exec and st.seq != target:
            return  # nothing we lack (unless it repairs our state at the stable checkpoint)
        if st.seq < self._h or (target is not None and st.seq < target):
            # A late answer to an older fetch: everything up to h is collected, so a state
            # before it could never be executed forward; keep fetching the one we need.
            return
        digest = state_digest(st.snapshot)
        self._check_proof(st.seq, digest, st.proof)
        try:
            self.table.restore(st.snapshot)
        except CommandError as exc:
            raise ProtocolError("bad-state", f"snapshot does not restore: {exc}") from None
        self._last_exec = st.seq
        self._own_cps[st.seq] = (digest, st.snapshot)
        self._fetch = None
        if st.seq > self._h:
            self._stabilize(st.seq, digest, st.proof)
        else:  # st.seq == h: the stable checkpoint's own state
            self._stable_snapshot = st.snapshot
            self._state_env = None
        self._transfers.append((st.seq, digest))
        self.counters["state-transfers"] += 1
        for client, (t, _, _) in list(self._waiting.items()):
            last = self.table.sessions.get(client)
            if last is not None and last[0] >= t:
                self._forget_request(client, t)
        self._dirty = True
        self._execute_ready()

    # ------------------------------------------------------------------ status

    def _send_status(self) -> None:
        env = seal(self.signer, STATUS, self.view, self._last_exec, self._h, not self.active)
        if not self.active and self._own_vc is not None:
            self._broadcast(env, self._own_vc)
        else:
            self._broadcast(env)

    def _on_status(self, st: Status) -> None:
        """Send a peer what it is missing: the new view, checkpoints, certificates, votes."""
        if st.signer == self.node_id:
            return
        out: list[Signed] = []
        behind = st.view < self.view or (st.view == self.view and st.changing)
        if behind and self.active and self._nv_env is not None:
            out.append(self._nv_env)
        elif st.view < self.view and not self.active and self._own_vc is not None:
            out.append(self._own_vc)
        if st.stable_seq < self._h and self._stable_proof:
            out.extend(self._stable_proof)
        # our own checkpoints it may have missed (a lost one would hold the window forever)
        out.extend(e for seq, e in sorted(self._own_cp_env.items()) if seq > st.stable_seq)
        if self._h <= st.executed < self._last_exec:  # (behind h: the proof makes it fetch)
            top = min(self._last_exec, st.executed + _CATCHUP_SEQS)
            for s in range(max(st.executed, self._h) + 1, top + 1):
                slot = self._slots.get(s)
                cert = self._commit_cert(slot) if slot is not None else None
                if cert is not None:
                    out.append(cert)
        stuck = self._peer_exec.get(st.signer) == st.executed
        self._peer_exec[st.signer] = st.executed
        if stuck and self.active and st.view == self.view and not st.changing:
            for s in sorted(self._slots):
                if s <= st.executed or len(out) >= _STATUS_ITEMS:
                    continue
                slot = self._slots[s]
                if slot.pp_view == self.view and slot.pp_env is not None:
                    out.append(slot.pp_env)
                for kind in (PREPARE, COMMIT):
                    env = slot.sent_prepare if kind == PREPARE else slot.sent_commit
                    if env is not None and (kind, self.view, self.node_id) in slot.cast:
                        out.append(env)
        if out:
            self._send(st.signer, *out[:_STATUS_ITEMS])

    # ------------------------------------------------------------------ view change

    def _start_view_change(self, view: int) -> None:
        if view <= self.view:
            return
        was_primary = self.active and self._primary(self.view) == self.node_id
        self.view = view
        self.active = False
        self._vc_count += 1
        self.counters["view-changes"] += 1
        self._nv_deadline = None
        if was_primary:
            self._ordered.clear()
        certs = [
            [slot.cert.pre_prepare, list(slot.cert.prepares)]
            for s, slot in sorted(self._slots.items())
            if slot.cert is not None and s > self._h
        ]
        env = seal(
            self.signer,
            VIEW_CHANGE,
            view,
            self._h,
            self._stable_digest,
            list(self._stable_proof),
            certs,
        )
        self._own_vc = env
        vc = decode_body(env.body)
        assert isinstance(vc, ViewChange)
        self._valid_vcs.add(env.body)
        self._vc_by_signer[self.node_id] = (vc, env)
        self._dirty = True
        self._broadcast(env)
        self._check_vc_quorum()

    def _validate_view_change(self, vc: ViewChange, env: Signed) -> None:
        if env.body in self._valid_vcs:
            return
        if vc.stable_seq:
            self._check_proof(vc.stable_seq, vc.stable_digest, vc.proof)
        elif vc.proof:
            raise ProtocolError("bad-view-change", "a proof for checkpoint 0")
        seen: set[int] = set()
        window = self.config.window
        for cert in vc.prepared:
            pp = self._open(cert.pre_prepare, PrePrepare, "bad-view-change")
            if pp.view >= vc.view or pp.signer != self._primary(pp.view):
                raise ProtocolError("bad-view-change", f"certificate of {pp.view}/{pp.seq}")
            if not vc.stable_seq < pp.seq <= vc.stable_seq + window or pp.seq in seen:
                raise ProtocolError("bad-view-change", f"certificate for seq {pp.seq}")
            seen.add(pp.seq)
            self._open_batch(pp)
            signers: set[str] = set()
            for pe in cert.prepares:
                v = self._open(pe, Vote, "bad-view-change")
                if (v.kind, v.view, v.seq, v.digest) != (PREPARE, pp.view, pp.seq, pp.digest):
                    raise ProtocolError("bad-view-change", f"prepare of {v.signer} mismatched")
                if v.signer == pp.signer:
                    raise ProtocolError("bad-view-change", "a prepare by the primary")
                signers.add(v.signer)
            if len(signers) < self.q - 1:
                raise ProtocolError("bad-view-change", f"{len(signers)} prepares for {pp.seq}")
        if len(self._valid_vcs) > 4096:
            self._valid_vcs.clear()
        self._valid_vcs.add(env.body)

    def _on_view_change(self, vc: ViewChange, env: Signed) -> None:
        if vc.view < self.view or (vc.view == self.view and self.active):
            if (
                vc.view == self.view
                and self._nv_env is not None
                and self._primary(self.view) == self.node_id
            ):
                self._send(vc.signer, self._nv_env)  # it missed our new-view
            return
        prev = self._vc_by_signer.get(vc.signer)
        if prev is not None and prev[0].view >= vc.view:
            if prev[1].body == env.body or prev[0].view > vc.view:
                return
            raise ProtocolError("conflicting-view-change", f"{vc.signer} for view {vc.view}")
        self._validate_view_change(vc, env)
        self._vc_by_signer[vc.signer] = (vc, env)
        # f + 1 replicas want a higher view: join the smallest of them
        higher = [v.view for v, _ in self._vc_by_signer.values() if v.view > self.view]
        if len(higher) >= self.f + 1:
            self._start_view_change(min(higher))
        self._check_vc_quorum()

    def _check_vc_quorum(self) -> None:
        if self.active:
            return
        view = self.view
        # The new-view timer starts once q replicas have left the old view. The paper counts
        # view changes for exactly this view; replicas already at a higher one count too,
        # or a replica that timed out ahead (and a primary that lost its view changes in a
        # crash) could leave the others waiting for a quorum that never comes.
        gone = sum(1 for vc, _ in self._vc_by_signer.values() if vc.view >= view)
        if gone >= self.q and self._nv_deadline is None:
            self._nv_deadline = self._ticks + self._timeout()
        vcs = sorted(
            ((s, vc, e) for s, (vc, e) in self._vc_by_signer.items() if vc.view == view),
            key=lambda x: x[0],
        )
        if len(vcs) < self.q or self._primary(view) != self.node_id:
            return
        chosen = vcs[: self.q]
        min_vc, entries = self._compute_new_view([vc for _, vc, _ in chosen])
        pps = [
            seal(self.signer, PRE_PREPARE, view, seq, digest, list(reqs))
            for seq, digest, reqs in entries
        ]
        nv = seal(self.signer, NEW_VIEW, view, [e for _, _, e in chosen], pps)
        self._broadcast(nv)
        self._install_view(view, nv, min_vc, pps)

    def _compute_new_view(
        self, vcs: Sequence[ViewChange]
    ) -> tuple[ViewChange, list[tuple[int, bytes, tuple[Signed, ...]]]]:
        """The pre-prepares a new view must start with (the paper's set O)."""
        min_vc = max(vcs, key=lambda v: (v.stable_seq, v.signer))
        min_s = min_vc.stable_seq
        chosen: dict[int, tuple[int, bytes, tuple[Signed, ...]]] = {}
        for vc in vcs:
            for cert in vc.prepared:
                pp = decode_body(cert.pre_prepare.body)
                assert isinstance(pp, PrePrepare)
                if pp.seq <= min_s:
                    continue
                cur = chosen.get(pp.seq)
                if cur is None or (pp.view, pp.digest) > (cur[0], cur[1]):
                    chosen[pp.seq] = (pp.view, pp.digest, pp.requests)
        max_s = max(chosen, default=min_s)
        entries: list[tuple[int, bytes, tuple[Signed, ...]]] = []
        for s in range(min_s + 1, max_s + 1):
            got = chosen.get(s)
            entries.append((s, got[1], got[2]) if got else (s, batch_digest(()), ()))
        return min_vc, entries

    def _on_new_view(self, nv: NewView, env: Signed) -> None:
        if nv.view < self.view or (nv.view == self.view and self.active):
            return  # a view we are past
        if nv.signer != self._primary(nv.view):
            raise ProtocolError("not-primary", f"{nv.signer} is not the primary of {nv.view}")
        vcs: list[ViewChange] = []
        signers: set[str] = set()
        for e in nv.view_changes:
            vc = self._open(e, ViewChange, "bad-new-view")
            if vc.view != nv.view or vc.signer in signers:
                raise ProtocolError("bad-new-view", f"view change of {vc.signer}")
            self._validate_view_change(vc, e)
            signers.add(vc.signer)
            vcs.append(vc)
        if len(vcs) < self.q:
            raise ProtocolError("bad-new-view", f"{len(vcs)} view changes, need {self.q}")
        min_vc, expected = self._compute_new_view(vcs)
        if len(expected) != len(nv.pre_prepares):
            raise ProtocolError("bad-new-view", "the pre-prepares do not follow")
        for (seq, digest, _), e in zip(expected, nv.pre_prepares, strict=True):
            pp = self._open(e, PrePrepare, "bad-new-view")
            if (pp.signer, pp.view, pp.seq, pp.digest) != (nv.signer, nv.view, seq, digest):
                raise ProtocolError("bad-new-view", f"pre-prepare for {seq} is not the one due")
            self._open_batch(pp)
        self._install_view(nv.view, env, min_vc, list(nv.pre_prepares))

    def _install_view(
        self, view: int, nv_env: Signed, min_vc: ViewChange, pps: Sequence[Signed]
    ) -> None:
        self.view = view
        self.active = False  # until the new view's pre-prepares are in place
        self._nv_env = nv_env
        self._nv_deadline = None
        self.counters["new-views"] += 1
        if min_vc.stable_seq > self._h:
            self._stabilize(min_vc.stable_seq, min_vc.stable_digest, min_vc.proof)
        primary = self._primary(view) == self.node_id
        max_s = self._h
        self._ordered.clear()
        for slot in self._slots.values():
            # votes of older views are useless now; certificates and commits stay
            slot.tally = {k: v for k, v in slot.tally.items() if k[1] >= view}
            slot.cast = {k: v for k, v in slot.cast.items() if k[1] >= view}
            if slot.pp_view < view:
                slot.pp, slot.pp_env, slot.pp_view = None, None, -1
            self._touch(slot)
        for env in pps:
            pp = decode_body(env.body)
            assert isinstance(pp, PrePrepare)
            max_s = max(max_s, pp.seq)
            if pp.seq <= self._h:
                continue
            slot = self._slot(pp.seq)
            slot.pp, slot.pp_env, slot.pp_view = pp, env, view
            self._touch(slot)
            if primary:
                for r in pp.requests:
                    req = decode_body(r.body)
                    assert isinstance(req, Request)
                    if self._ordered.get(req.signer, 0) < req.t:
                        self._ordered[req.signer] = req.t
            else:
                self._vote(slot, PREPARE, view, pp.digest)
        self._next_seq = max(max_s, self._h, self._last_exec) + 1
        for client, (t, _, e) in list(self._waiting.items()):
            self._waiting[client] = (t, self._ticks, e)
        for signer in [s for s, (vc, _) in self._vc_by_signer.items() if vc.view <= view]:
            del self._vc_by_signer[signer]
        self._dirty = True
        self.active = True
        for s in sorted(self._slots):
            self._check_prepared(self._slots[s])
        if primary:
            self._try_batch()
        else:
            for _, _, env in self._waiting.values():
                self._send(self._primary(view), env)

    # ------------------------------------------------------------------ durability

    def _durable(self) -> bytes:
        slots = []
        for s in sorted(self._slots):
            slot = self._slots[s]
            if slot.durable is None:
                slot.durable = pack(
                    [
                        s,
                        slot.pp_view,
                        _wire(slot.pp_env),
                        _wire(slot.sent_prepare),
                        _wire(slot.sent_commit),
                        None if slot.cert is None else _cert_wire(slot.cert_view, slot.cert),
                        _wire(slot.committed_pp),
                        _wires(slot.commit_proof),
                    ]
                )
            slots.append(slot.durable)
        return pack(
            [
                1,
                self.view,
                self.active,
                self._vc_count,
                self._h,
                self._stable_digest,
                _wires(self._stable_proof),
                self._stable_snapshot,
                self._next_seq,
                _wire(self._own_vc),
                _wire(self._nv_env),
                slots,
            ]
        )

    def _restore(self, data: bytes) -> None:
        """Rebuild from :meth:`_durable` bytes: state at the stable checkpoint, then replay."""
        try:
            raw = msgpack.unpackb(data, raw=False)
            (
                version,
                view,
                active,
                vc_count,
                h,
                stable_digest,
                proof,
                snapshot,
                next_seq,
                own_vc,
                nv_env,
                slots,
            ) = raw
            if version != 1:
                raise ValueError(f"durable state version {version}")
            if snapshot is not None and h > 0:
                self.table.restore(snapshot)
            self.view, self.active, self._vc_count = view, active, vc_count
            self._h, self._stable_digest = h, stable_digest
            self._stable_proof = _unwires(proof)
            self._stable_snapshot = snapshot
            self._last_exec = h if snapshot is not None else 0
            if snapshot is None and h > 0:
                self._fetch = (h, stable_digest)  # crashed while fetching: fetch again
                self._fetch_at = -(10**9)
            self._own_cps = {h: (stable_digest, snapshot or b"")}
            self._next_seq = next_seq
            self._own_vc = _unwire(own_vc)
            self._nv_env = _unwire(nv_env)
            for blob in slots:
                s, pp_view, pp_env, sp, sc, cert, cpp, proof_c = msgpack.unpackb(blob, raw=False)
                slot = self._slot(s)
                slot.pp_env = _unwire(pp_env)
                if slot.pp_env is not None:
                    pp = decode_body(slot.pp_env.body)
                    assert isinstance(pp, PrePrepare)
                    slot.pp, slot.pp_view = pp, pp_view
                for env in (_unwire(sp), _unwire(sc)):
                    if env is None:
                        continue
                    v = decode_body(env.body)
                    assert isinstance(v, Vote)
                    slot.cast[(v.kind, v.view, self.node_id)] = v.digest
                    slot.tally.setdefault((v.kind, v.view, v.digest), {})[self.node_id] = env
                    if v.kind == PREPARE:
                        slot.sent_prepare = env
                    else:
                        slot.sent_commit = env
                if cert is not None:
                    slot.cert_view = cert[0]
                    slot.cert = PreparedCert(Signed(*cert[1]), _unwires(cert[2]))
                slot.committed_pp = _unwire(cpp)
                if slot.committed_pp is not None:
                    pp = decode_body(slot.committed_pp.body)
                    assert isinstance(pp, PrePrepare)
                    slot.committed = pp.digest
                slot.commit_proof = _unwires(proof_c)
            if self._own_vc is not None and not self.active:
                vc = decode_body(self._own_vc.body)
                assert isinstance(vc, ViewChange)
                self._vc_by_signer[self.node_id] = (vc, self._own_vc)
                self._valid_vcs.add(self._own_vc.body)
        except (ValueError, TypeError, KeyError, AssertionError, CommandError) as exc:
            raise ValueError(f"cannot restore the PBFT replica: {exc}") from None
        self._reported = (self.role, self.view)
        self._execute_ready()


def _coalesce(messages: list[Message]) -> list[Message]:
    """One frame per destination: the envelopes of one step travel together, in order."""
    if len(messages) < 2:
        return messages
    by_dst: dict[NodeId, list[Signed]] = {}
    for m in messages:
        assert isinstance(m, PbftFrame)
        by_dst.setdefault(m.dst, []).extend(m.items)
    src = messages[0].src
    return [PbftFrame(src, dst, tuple(items)) for dst, items in by_dst.items()]


def _cert_wire(view: int, cert: PreparedCert) -> list[Any]:
    return [view, cert.pre_prepare.wire(), _wires(cert.prepares)]


def _wire(env: Signed | None) -> list[bytes] | None:
    return None if env is None else env.wire()


def _wires(envs: Sequence[Signed]) -> list[list[bytes]]:
    return [e.wire() for e in envs]


def _unwire(raw: Any) -> Signed | None:
    return None if raw is None else Signed(bytes(raw[0]), bytes(raw[1]))


def _unwires(raw: Any) -> tuple[Signed, ...]:
    return tuple(Signed(bytes(b), bytes(s)) for b, s in raw)
