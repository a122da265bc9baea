"""Requests in flight: submits proposed by the leader or forwarded to it, and reads.

A submit holds a session lane ``(client, seq)`` for its whole life (the state machine's
:class:`~ruflo_consensus.statemachine.SessionTable` applies a retried lane once), and a
:class:`Waiter` that the node resolves when the entry is applied here. :class:`Submissions`
drives it until it resolves:

* on the **leader** it proposes the command to the core, once per term;
* on a **follower** it forwards the command to the leader it knows, in a signed envelope
  of kind :data:`KIND_FORWARD` (payload ``[client, seq, command]``), again when the
  leader changes and every ``retry_s`` while no answer came (the node's sweeper pokes
  every waiter now and then, so a lost forward is re-sent). The leader serves it as a
  submit of its own in the same lane and answers with kind :data:`KIND_FORWARD_REPLY`,
  payload ``[client, seq, status, encoded result]``: status ``0`` with the result
  (:func:`~ruflo_consensus.statemachine.encode_result`), ``1`` not the leader, ``2`` try
  again (no answer in time, or the leader is busy serving 4096 forwards). Anything but
  ``0`` only wakes the waiter, which re-checks who leads and sends again.

A submit without a lane of the caller's takes one of the node's own
(:meth:`Submissions.take_lane`): ``max_sessions`` of them, so that a node has at most that
many submits in flight (more wait: back-pressure).

:class:`PendingReads` serves linearizable reads: the core confirms a read point
(:class:`~ruflo_consensus.core.base.ReadIndexReads`; a follower's core asks the leader
for it), and the query runs on the local machine once the node has applied through it.

Both talk to the node through :class:`~.services.NodeServices`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from ..core.base import NotLeader, Proposal, ProposalDropped, ReadIndexReads, ReadState, Role
from ..statemachine import CommandError, CommandRejected, decode_result, encode_result, pack
from .errors import NotLeaderError, SubmitTimeout
from .services import NodeServices, decode_list

__all__ = ["KIND_FORWARD", "KIND_FORWARD_REPLY", "Lane", "PendingReads", "Submissions", "Waiter"]

KIND_FORWARD = 1  # payload: [client, seq, command] — a follower hands a submit to the leader
KIND_FORWARD_REPLY = 2  # payload: [client, seq, status, encoded result]

_OK, _NOT_LEADER, _RETRY = 0, 1, 2
_TIMED_OUT = object()  # what _drive returns when a submit's deadline passed
_MAX_FORWARDS = 4096  # forwarded submits a leader serves at once


class Waiter:
    """One request waiting for a result; ``poke`` wakes it to re-check (role changed)."""

    __slots__ = ("confirmed", "done", "event", "query", "result")

    def __init__(self, query: Any = None) -> None:
        self.event = trio.Event()
        self.done = False
        self.confirmed = False  # a read whose read point is known: it only waits to apply
        self.result: Any = None
        self.query = query

    def resolve(self, result: Any) -> None:
        """Set the result and wake the waiting task (the first result wins)."""
        if not self.done:
            self.result = result
            self.done = True
            self.event.set()

    def poke(self) -> None:
        """Wake the waiting task without a result: it re-checks and may ask again."""
        self.event.set()

    async def wait(self) -> None:
        """Until resolved or poked (the node's sweeper pokes every waiter periodically)."""
        await self.event.wait()
        if not self.done:
            self.event = trio.Event()


@dataclass(slots=True)
class Lane:
    """One of a node's own session lanes: a client id and its last sequence number."""

    client: str
    seq: int = 0


class Submissions:
    """The submits in flight on one node, and its side of the forwarding protocol.

    ``lane_prefix``/``lanes`` name and count the node's own session lanes.
    """

    def __init__(self, node: NodeServices, lane_prefix: str, lanes: int) -> None:
        self.node = node
        self.waiters: dict[tuple[str, int], Waiter] = {}
        self.proposed = 0
        """Commands proposed to the core (as leader; a retry in a new term counts again)."""
        self.refused = 0
        """Proposals the core refused at once (``ProposalDropped``: a leadership transfer
        in progress, too many uncommitted entries); the submit tries again."""
        self.sweep_s = node.retry_s / 2  # how often the node's sweeper pokes every waiter
        self._serving = trio.Semaphore(_MAX_FORWARDS)
        self._lanes_send, self._lanes_recv = trio.open_memory_channel[Lane](lanes)
        for k in range(lanes):
            self._lanes_send.send_nowait(Lane(f"{lane_prefix}/{k}"))

    async def take_lane(self, timeout: float) -> Lane:
        """A free lane of the node's own (waiting for one up to ``timeout`` seconds, then
        :class:`SubmitTimeout`); hand it back with :meth:`return_lane`."""
        try:
            return self._lanes_recv.receive_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(timeout):
                return await self._lanes_recv.receive()
        raise SubmitTimeout(f"no free session lane within {timeout} s")

    def return_lane(self, lane: Lane) -> None:
        """Hand back a lane from :meth:`take_lane`."""
        self._lanes_send.send_nowait(lane)

    # ------------------------------------------------------------------ the node's side

    def resolve(self, client: str, seq: int, result: Any) -> None:
        """Lane ``(client, seq)`` was applied here with ``result``: answer its waiter."""
        w = self.waiters.get((client, seq))
        if w is not None:
            w.resolve(result)

    def answer_from(self, sessions: Mapping[str, tuple[int, Any]]) -> None:
        """Answer every waiter whose lane ``sessions`` (a restored session table) covers."""
        for (client, seq), w in self.waiters.items():
            session = sessions.get(client)
            if session is not None and session[0] == seq:
                w.resolve(session[1])

    def poke(self, client: str, seq: int) -> None:
        """Wake the waiter of one lane (its proposal was dropped): it proposes again."""
        w = self.waiters.get((client, seq))
        if w is not None:
            w.poke()

    def poke_all(self) -> None:
        """Wake every waiter (the role changed, or the sweeper's periodic nudge)."""
        for w in self.waiters.values():
            w.poke()

    # ------------------------------------------------------------------ submitting

    async def submit_as(
        self, client: str, seq: int, command: Any, timeout: float, *, forward: bool = True
    ) -> Any:
        """Submit as ``(client, seq)``: propose here if leader, else forward (if allowed,
        else :class:`NotLeaderError`); :class:`SubmitTimeout` after ``timeout`` seconds."""
        key = (client, seq)
        w = self.waiters.get(key)
        owner = w is None
        if w is None:
            w = self.waiters[key] = Waiter()
        try:
            if timeout < 5 * self.sweep_s:  # a short timeout: exact, with a cancel scope
                with trio.CancelScope(deadline=trio.current_time() + timeout):
                    return await self._drive(w, owner, client, seq, command, math.inf, forward)
            else:
                # A long one (the usual 30 s) is checked whenever the waiter wakes, which
                # the sweeper makes happen every sweep_s: a cancel scope per submit is a
                # tenth of a busy leader's CPU. The timeout fires up to sweep_s late.
                deadline = trio.current_time() + timeout
                result = await self._drive(w, owner, client, seq, command, deadline, forward)
                if result is not _TIMED_OUT:
                    return result
            raise SubmitTimeout(f"no result for {client}#{seq} within {timeout} s")
        finally:
            if owner:
                self.waiters.pop(key, None)

    async def _drive(
        self,
        w: Waiter,
        owner: bool,
        client: str,
        seq: int,
        command: Any,
        deadline: float,
        forward: bool,
    ) -> Any:
        """Propose (as leader) or forward until ``w`` resolves; ``_TIMED_OUT`` at ``deadline``."""
        node = self.node
        attempt: tuple[Any, ...] = ()
        last_send = -1e9
        while not w.done:
            core = node.core
            now = trio.current_time()
            if now >= deadline:
                return _TIMED_OUT
            if core.role is Role.LEADER:
                if owner and attempt != ("lead", core.term):
                    try:
                        core.propose(Proposal(client, seq, command))
                        self.proposed += 1
                        attempt = ("lead", core.term)
                        node.wake()
                    except NotLeader:
                        pass
                    except ProposalDropped:
                        self.refused += 1
                        await trio.sleep(node.tick_s * 5)
                        continue
            elif not forward:
                raise NotLeaderError(core.leader)
            elif core.leader is not None:
                target = ("fwd", core.term, core.leader)
                if attempt != target or now - last_send > node.retry_s:
                    attempt, last_send = target, now
                    node.send_envelope(core.leader, KIND_FORWARD, pack([client, seq, command]))
            await w.wait()
        return w.result

    # ------------------------------------------------------------------ forwarding

    def on_forward(self, sender: str, payload: bytes) -> None:
        """A follower handed us a submit (kind :data:`KIND_FORWARD`)."""
        node = self.node
        raw = decode_list(payload, 3, node.rejected)
        if raw is None:
            return
        client, seq, command = raw
        if not isinstance(client, str) or type(seq) is not int or seq < 0:
            node.rejected["bad-field"] += 1
            return
        node.spawn(self._serve_forward, sender, client, seq, command)

    async def _serve_forward(self, sender: str, client: str, seq: int, command: Any) -> None:
        node = self.node
        status, result = _RETRY, None
        if self._serving.value == 0:
            node.rejected["forward-busy"] += 1
        else:
            async with self._serving:
                try:
                    result = await self.submit_as(
                        client, seq, command, node.retry_s * 2, forward=False
                    )
                    status = _OK
                except NotLeaderError:
                    status = _NOT_LEADER
                except SubmitTimeout:
                    status = _RETRY
        reply = [client, seq, status, encode_result(result)]
        node.send_envelope(sender, KIND_FORWARD_REPLY, pack(reply))

    def on_reply(self, payload: bytes) -> None:
        """The leader's answer to a submit we forwarded (kind :data:`KIND_FORWARD_REPLY`)."""
        node = self.node
        raw = decode_list(payload, 4, node.rejected)
        if raw is None:
            return
        client, seq, status, result = raw
        if not isinstance(client, str) or type(seq) is not int or type(status) is not int:
            node.rejected["bad-field"] += 1
            return
        w = self.waiters.get((client, seq))
        if w is None:
            return
        if status == _OK:
            try:
                w.resolve(decode_result(result))
            except ValueError:
                node.rejected["bad-field"] += 1
        else:
            w.poke()


class PendingReads:
    """The linearizable reads in flight on one node.

    ``run_query`` runs a query on the state machine (it must not change state).
    """

    def __init__(self, node: NodeServices, run_query: Callable[[Any], Any]) -> None:
        self.node = node
        self.run_query = run_query
        self.readers: dict[int, Waiter] = {}
        self._points: list[tuple[int, int]] = []  # (read index, ctx), confirmed
        self._next_ctx = 0

    async def read(self, reads: ReadIndexReads, query: Any) -> Any:
        """Ask ``reads`` (the core) for a read point until one is confirmed, then wait
        until it is applied and run ``query``. The caller bounds the time."""
        node = self.node
        while True:
            self._next_ctx += 1
            ctx = self._next_ctx
            w = self.readers[ctx] = Waiter(query)
            try:
                try:
                    reads.read_index(ctx)
                except NotLeader:
                    await node.wait_role_change(node.retry_s)
                    continue
                node.wake()
                await w.wait()
                while w.confirmed and not w.done:
                    await w.wait()  # confirmed: wait for the apply, do not re-ask
                if w.done:
                    return w.result
            finally:
                self.readers.pop(ctx, None)

    def confirm(self, states: list[ReadState]) -> None:
        """Read points the core handed over (``Ready.reads``); index -1: ask again."""
        for rs in states:
            reader = self.readers.get(rs.ctx)
            if reader is None:
                continue
            if rs.index < 0:
                reader.poke()
            else:
                reader.confirmed = True
                self._points.append((rs.index, rs.ctx))

    def serve(self, applied: int) -> None:
        """Answer the confirmed reads whose read point is applied (``<= applied``)."""
        if not self._points:
            return
        keep = []
        for index, ctx in self._points:
            reader = self.readers.get(ctx)
            if reader is None:
                continue
            if index <= applied:
                try:
                    reader.resolve(self.run_query(reader.query))
                except CommandError as exc:
                    reader.resolve(CommandRejected(exc.code, exc.message))
            else:
                keep.append((index, ctx))
        self._points = keep

    def poke_all(self) -> None:
        """Wake every reader: an unconfirmed one asks for its read point again."""
        for r in self.readers.values():
            r.poke()
