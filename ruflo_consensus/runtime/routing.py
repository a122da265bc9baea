"""The overlay: next-hop routing around failed links, link-state flooding and relays.

A :class:`Router` owns a node's :class:`~.transport.Transport` (its direct links) and
decides where every frame goes:

* **Outbound** (:meth:`Router.send`): a signed envelope for any node of the spec goes to
  the first step of a shortest path in the overlay minus the links this node knows are
  down (:meth:`~ruflo_consensus.topology.Topology.next_hops`). With no such path, a frame
  for a direct neighbour waits on that link for it to come back; any other is dropped and
  counted in :attr:`Router.unroutable`.
* **Known-down links** (:meth:`Router.known_down`): this node's own (from the transport),
  and every other node's, which each node floods as a signed *link-state* announcement
  (kind :data:`KIND_LINK_STATE`, destination :data:`BROADCAST`) when one of its links
  changes and every ``link_state_s`` seconds. An announcement older than three periods
  is forgotten. Each node re-floods an announcement's signed bytes to its live
  neighbours once; a copy that comes back by another path is dropped by the replay
  window and counted in :attr:`Router.flood_duplicates`.
* **Inbound** (:meth:`Router.on_frame`, every frame that arrives on ``/peer``): size
  check, decode and signature check first; then a flooded frame is handled and passed
  on, a frame for another node is relayed unchanged to its next hop (the signature
  covers everything but the hop budget), and a frame for this node passes the replay
  window and goes to ``deliver``.

Every frame carries a hop budget (the number of nodes) outside its signature, which each
relay lowers: a frame that inconsistent knowledge sends round in circles dies out.
Each refusal is counted per reason in the shared ``rejected`` counter.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from ..core.base import NodeId
from ..identity import (
    Envelope,
    EnvelopeError,
    NodeIdentity,
    NonceSource,
    ReplayedEnvelope,
    ReplayWindow,
    parse_frame,
    reframe,
    seal,
    verify_envelope,
)
from ..statemachine import pack
from .services import decode_list
from .spec import ClusterSpec
from .transport import Transport

__all__ = ["BROADCAST", "KIND_LINK_STATE", "Router"]

KIND_LINK_STATE = 3  # payload: [down neighbour, ...] — flooded to every node
BROADCAST = "*"  # the destination of a flooded frame

_Report = tuple[tuple[int, bytes], frozenset[str], float]  # (order, down links, received)


class Router:
    """One node's place in the overlay: its links, its routes, its relays.

    ``deliver(env)`` receives every envelope addressed to this node once it passed the
    checks (see the module docstring); ``on_client`` serves a ``/client`` connection (it
    goes to the transport). ``relay_hook`` (tests only) may rewrite frames this node
    relays, to play a malicious relay.
    """

    def __init__(
        self,
        node_id: NodeId,
        spec: ClusterSpec,
        identity: NodeIdentity,
        nonces: NonceSource,
        peer_keys: dict[str, bytes],
        rejected: Counter[str],
        rng: random.Random,
        deliver: Callable[[Envelope], None],
        on_client: Callable[[WebSocketConnection], Awaitable[None]] | None,
        *,
        relay_hook: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.node_id = node_id
        self.spec = spec
        self.identity = identity
        self.nonces = nonces
        self.peer_keys = peer_keys
        self.rejected = rejected
        self.deliver = deliver
        self.relay_hook = relay_hook
        self.window = ReplayWindow(spec.runtime.replay_max_age_s)
        self.max_frame = spec.runtime.max_frame
        self.hop_limit = min(len(spec.ids), 255)
        self.transport = Transport(
            node_id, spec, self.on_frame, on_client, rejected, rng, self.on_link_change
        )
        self.relayed = 0
        """Frames for other nodes passed on to their next hop."""
        self.unroutable = 0
        """Frames this node sent that had no route (dropped)."""
        self.flood_duplicates = 0
        """Flooded frames that arrived again by another path (dropped, not refused)."""
        self._reports: dict[str, _Report] = {}
        self._routes: dict[str, str] | None = None  # the hop table, None: recompute
        self._links_changed = trio.Event()
        self._pace_s = spec.raft.tick_ms / 1000  # at most one announcement per tick

    # ------------------------------------------------------------------ routes

    def known_down(self) -> set[tuple[str, str]]:
        """The links this node knows are down: its own, and what fresh reports say."""
        down = {(self.node_id, p) for p, s in self.transport.links.items() if s.down}
        horizon = trio.current_time() - 3 * self.spec.runtime.link_state_s
        for origin, (_order, links, received) in self._reports.items():
            if received >= horizon:
                down.update((origin, p) for p in links)
        return down

    def next_hop(self, dst: NodeId) -> NodeId | None:
        """The neighbour a frame for ``dst`` goes to: around known failures, else direct."""
        routes = self._routes
        if routes is None:
            routes = self._routes = self.spec.topology.next_hops(
                self.node_id, down_links=self.known_down()
            )
        hop = routes.get(dst)
        if hop is None and dst in self.transport.links:
            return dst  # no way round: queue it for the link's return
        return hop

    def link_status(self) -> dict[str, Any]:
        """``down_links`` (as :meth:`known_down`), ``inbound`` connections and each
        link's health with its queue length, for the node's ``status``."""
        transport = self.transport
        return {
            "down_links": sorted(list(pair) for pair in self.known_down()),
            "inbound": transport.inbound,
            "links": [
                {**s.to_json(), "queued": transport.queued(p)} for p, s in transport.links.items()
            ],
        }

    def send(self, dst: NodeId, kind: int, payload: bytes) -> None:
        """Sign ``payload`` for ``dst`` and queue it on the next hop's link."""
        hop = self.next_hop(dst)
        if hop is None:
            self.unroutable += 1
            return
        frame = seal(self.identity, dst, kind, payload, self.nonces, hops=self.hop_limit)
        self.transport.send(hop, frame)

    def on_link_change(self, peer: str) -> None:
        """A link of ours went up or down (the transport says): re-route, announce."""
        self._routes = None
        self._links_changed.set()

    # ------------------------------------------------------------------ link state

    async def announce_loop(self) -> None:
        """Flood this node's down links on every change, and every ``link_state_s``."""
        while True:
            with trio.move_on_after(self.spec.runtime.link_state_s):
                await self._links_changed.wait()
            self._links_changed = trio.Event()
            self._routes = None  # reports may have aged out
            down = sorted(p for p, s in self.transport.links.items() if s.down)
            frame = seal(
                self.identity,
                BROADCAST,
                KIND_LINK_STATE,
                pack(down),
                self.nonces,
                hops=self.hop_limit,
            )
            self._flood(frame)
            await trio.sleep(self._pace_s)

    def _flood(self, frame: bytes, skip: str | None = None) -> None:
        for peer in self.transport.neighbours:
            if peer != skip and self.transport.live(peer):
                self.transport.send(peer, frame)

    def _on_link_state(self, env: Envelope, body: bytes, signature: bytes, hops: int) -> None:
        raw = decode_list(env.payload, None, self.rejected)
        if raw is None:
            return
        sender = env.sender
        neighbours = self.spec.topology.neighbours(sender)
        if not all(isinstance(p, str) and p in neighbours for p in raw):
            self.rejected["bad-field"] += 1
            return
        order = (env.timestamp_ms, env.nonce)
        known = self._reports.get(sender)
        if known is None or known[0] < order:
            self._reports[sender] = (order, frozenset(raw), trio.current_time())
            self._routes = None
        if hops > 0:
            self._flood(reframe(body, signature, hops - 1), skip=sender)

    # ------------------------------------------------------------------ inbound

    def on_frame(self, data: bytes) -> None:
        """Everything that arrives on ``/peer``: check, then flood, relay or deliver."""
        try:
            env, body, signature, hops = parse_frame(data, self.max_frame)
            verify_envelope(env, body, signature, self.peer_keys)
        except EnvelopeError as exc:
            self.rejected[exc.reason] += 1
            return
        if env.dst == BROADCAST:
            self._on_broadcast(env, body, signature, hops)
        elif env.dst != self.node_id:
            self._relay(env, body, signature, hops)
        else:
            try:
                self.window.check(env.sender, env.nonce, env.timestamp_ms)
            except EnvelopeError as exc:
                self.rejected[exc.reason] += 1
                return
            self.deliver(env)

    def _on_broadcast(self, env: Envelope, body: bytes, signature: bytes, hops: int) -> None:
        if env.sender == self.node_id:
            return  # our own announcement, back from a neighbour
        try:
            self.window.check(env.sender, env.nonce, env.timestamp_ms)
        except ReplayedEnvelope:
            self.flood_duplicates += 1  # it reached us by another path already
            return
        except EnvelopeError as exc:
            self.rejected[exc.reason] += 1
            return
        if env.kind == KIND_LINK_STATE:
            self._on_link_state(env, body, signature, hops)
        else:
            self.rejected["unknown-kind"] += 1

    def _relay(self, env: Envelope, body: bytes, signature: bytes, hops: int) -> None:
        if env.dst not in self.peer_keys:
            self.rejected["wrong-destination"] += 1
            return
        if hops <= 0:
            self.rejected["hop-limit"] += 1
            return
        hop = self.next_hop(env.dst)
        if hop is None or hop == env.sender:
            self.rejected["no-route"] += 1
            return
        frame = reframe(body, signature, hops - 1)
        if self.relay_hook is not None:
            frame = self.relay_hook(frame)
        if self.transport.send(hop, frame):
            self.relayed += 1
