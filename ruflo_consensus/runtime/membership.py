"""Membership changes on real nodes: served by the leader, forwarded by the others.

:meth:`Node.change_membership <ruflo_consensus.runtime.node.Node.change_membership>`
hands a single-server change (``add-learner``, ``promote-learner``, ``remove-voter``,
``remove-learner``; see ``docs/raft.md``) to :class:`MembershipAdmin`:

* on the **leader** it calls the core's ``propose_conf_change`` (its
  :class:`~ruflo_consensus.core.base.MembershipChanges` capability; a core without it
  raises :class:`~.errors.CapabilityMissing`) and waits until this node
  has applied the configuration entry, then returns the configuration it made
  (:func:`configuration_map`). Transient refusals (``term-not-committed`` right after an
  election, ``change-in-progress``, ``transfer-in-progress``, ``too-many-uncommitted``)
  are retried until the deadline; every other refusal is raised at once as the core's
  :class:`~ruflo_consensus.core.base.ConfChangeRefused` (nothing changed). Only nodes of
  the spec can be added (``not-in-spec``): a node must have keys and an endpoint to link;
* on a **follower** it is forwarded to the leader in a signed envelope (kind
  :data:`KIND_CHANGE`, payload ``[rid, kind, node]``), answered with kind
  :data:`KIND_CHANGE_REPLY` (``[rid, status, body]``). A forward that gets no answer is
  sent again with the same ``rid``; the leader ignores a re-send while it still serves
  the request and remembers the outcome of recent ones per ``(sender, rid)``, so a
  re-sent request is not made twice (by the same leader: after a leader change the new
  leader may answer a re-send with e.g. ``already-member`` when the first one went
  through).

It talks to the node through :class:`~.services.NodeServices` only.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections import OrderedDict
from typing import Any

import trio

from ..core.base import ConfChangeKind, ConfChangeRefused, MembershipChanges, NodeId, Role
from ..statemachine import pack
from .errors import CapabilityMissing
from .services import NodeServices, decode_list

__all__ = [
    "KIND_CHANGE",
    "KIND_CHANGE_REPLY",
    "TRANSIENT_REFUSALS",
    "MembershipAdmin",
    "configuration_map",
    "member_role",
]

KIND_CHANGE = 4  # payload: [rid, kind, node] — a follower hands a membership change on
KIND_CHANGE_REPLY = 5  # payload: [rid, status, body]

TRANSIENT_REFUSALS = frozenset(
    {"term-not-committed", "change-in-progress", "transfer-in-progress", "too-many-uncommitted"}
)
"""Refusals that go away by themselves: the leader retries them until the deadline."""

_OK, _NOT_LEADER, _RETRY, _REFUSED = 0, 1, 2, 3
_REMEMBERED = 256  # outcomes of forwarded requests the leader keeps for re-sends


def member_role(membership: MembershipChanges | None, node_id: NodeId) -> str:
    """``"voter"``, ``"learner"`` or ``"none"`` in the configuration in effect on a core
    (``membership`` is its capability; None: a backend without membership, where everyone
    of the spec takes part)."""
    if membership is None:
        return "voter"
    conf = membership.configuration
    if node_id in conf.voters:
        return "voter"
    return "learner" if node_id in conf.learners else "none"


def configuration_map(membership: MembershipChanges | None) -> dict[str, Any]:
    """The configuration in effect on a core: voters, learners, its index, committed?
    (Empty for a core without the :class:`MembershipChanges` capability.)"""
    if membership is None:
        return {}
    conf = membership.configuration
    index = membership.conf_index
    return {
        "voters": list(conf.voters),
        "learners": list(conf.learners),
        "conf_index": index,
        "conf_committed": index <= membership.commit,
    }


class MembershipAdmin:
    """The membership side of one :class:`~ruflo_consensus.runtime.node.Node`."""

    def __init__(self, node: NodeServices) -> None:
        self.node = node
        self._replies: dict[int, trio.MemorySendChannel[list[Any]]] = {}
        self._done: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
        self._busy: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ the caller's side

    async def change(
        self, kind: ConfChangeKind | str, target: NodeId, deadline: float
    ) -> dict[str, Any]:
        """Make the change here (leader) or at the leader; the caller bounds the time
        (``deadline`` only stops retrying transient refusals here, see the module doc).
        Raises :class:`~.errors.CapabilityMissing` on a core without membership changes."""
        node = self.node
        membership = node.capabilities.membership
        if membership is None:
            raise CapabilityMissing(type(node.core).__name__, "membership changes")
        rid = secrets.randbits(62)
        while True:
            core = node.core
            if core.role is Role.LEADER:
                return await self._change_here(membership, str(kind), target, deadline)
            if core.leader is not None and core.leader != node.node_id:
                reply = await self._forward(core.leader, rid, str(kind), target)
                if reply is not None:
                    return reply
            else:
                await node.wait_role_change(node.retry_s)

    async def _forward(
        self, leader: NodeId, rid: int, kind: str, target: NodeId
    ) -> dict[str, Any] | None:
        """Ask ``leader``; the configuration, or None to try again (no answer, not leader)."""
        node = self.node
        send, recv = trio.open_memory_channel[list[Any]](1)
        self._replies[rid] = send
        try:
            node.send_envelope(leader, KIND_CHANGE, pack([rid, kind, target]))
            with trio.move_on_after(5 * node.retry_s):
                status, body = await recv.receive()
                if status == _OK and isinstance(body, dict):
                    return body
                if status == _REFUSED and _is_refusal(body):
                    raise ConfChangeRefused(body[0], body[1])
                if status == _NOT_LEADER:
                    await node.wait_role_change(node.retry_s)
            return None
        finally:
            self._replies.pop(rid, None)

    async def _change_here(
        self, membership: MembershipChanges, kind: str, target: NodeId, deadline: float
    ) -> dict[str, Any]:
        """As leader: propose, retry transient refusals, wait until the entry is applied."""
        node = self.node
        if kind == ConfChangeKind.ADD_LEARNER and target not in node.spec.endpoints:
            raise ConfChangeRefused(
                "not-in-spec", f"{target!r:.60} has no endpoint or keys in the spec"
            )
        while True:
            try:
                index = membership.propose_conf_change(kind, target)
                break
            except ConfChangeRefused as exc:
                if exc.reason not in TRANSIENT_REFUSALS or trio.current_time() >= deadline:
                    raise
            await trio.sleep(node.tick_s * 5)
        term = node.core.term
        node.wake()
        await node.wait_applied(index, math.inf)  # the caller bounds the time
        entry = membership.entry(index)
        if entry is not None and (entry.term != term or entry.conf is None):
            raise ConfChangeRefused(
                "superseded", f"a new leader replaced entry {index} before it committed"
            )
        conf = membership.configuration_at(index)
        return {
            "voters": list(conf.voters),
            "learners": list(conf.learners),
            "conf_index": index,
            "conf_committed": True,
        }

    # ------------------------------------------------------------------ the leader's side

    def on_change(self, sender: str, payload: bytes) -> None:
        """A forwarded change arrived (kind :data:`KIND_CHANGE`)."""
        node = self.node
        raw = decode_list(payload, 3, node.rejected)
        if raw is None:
            return
        rid, kind, target = raw
        if type(rid) is not int or not isinstance(kind, str) or not isinstance(target, str):
            node.rejected["bad-field"] += 1
            return
        key = (sender, rid)
        done = self._done.get(key)
        if done is not None:
            node.send_envelope(sender, KIND_CHANGE_REPLY, pack(done))
        elif key not in self._busy and node.spawn(self._serve, sender, rid, kind, target):
            self._busy.add(key)

    async def _serve(self, sender: str, rid: int, kind: str, target: str) -> None:
        node = self.node
        key = (sender, rid)
        reply: list[Any]
        try:
            membership = node.capabilities.membership
            if membership is None:
                reply = [rid, _REFUSED, ["unsupported", "this backend has no membership changes"]]
            elif node.core.role is not Role.LEADER:
                reply = [rid, _NOT_LEADER, node.core.leader]
            else:
                # transient refusals are retried for a few election timeouts; once the
                # entry is proposed we wait for it as long as a submit would (re-sends
                # of this request meanwhile are ignored: it is busy), so that a slow
                # commit is never proposed a second time and refused as already made
                deadline = trio.current_time() + 4 * node.retry_s
                with trio.move_on_after(node.spec.runtime.submit_timeout_s):
                    try:
                        conf = await self._change_here(membership, kind, target, deadline)
                        reply = [rid, _OK, conf]
                    except ConfChangeRefused as exc:
                        reply = [rid, _REFUSED, [exc.reason, exc.detail]]
                    self._done[key] = reply
                    while len(self._done) > _REMEMBERED:
                        self._done.popitem(last=False)
                    node.send_envelope(sender, KIND_CHANGE_REPLY, pack(reply))
                    return
                reply = [rid, _RETRY, None]
            node.send_envelope(sender, KIND_CHANGE_REPLY, pack(reply))
        finally:
            self._busy.discard(key)

    def on_reply(self, payload: bytes) -> None:
        """The leader's answer to a change we forwarded (kind :data:`KIND_CHANGE_REPLY`)."""
        node = self.node
        raw = decode_list(payload, 3, node.rejected)
        if raw is None:
            return
        rid, status, body = raw
        if type(rid) is not int or type(status) is not int:
            node.rejected["bad-field"] += 1
            return
        waiting = self._replies.get(rid)
        if waiting is not None:
            with contextlib.suppress(trio.WouldBlock):  # a duplicate answer
                waiting.send_nowait([status, body])


def _is_refusal(body: Any) -> bool:
    return isinstance(body, list) and len(body) == 2 and all(isinstance(x, str) for x in body)
