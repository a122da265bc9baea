"""Websocket transport between nodes: trio-websocket, ws:// or wss://, bounded queues.

Each node listens on its endpoint. Resource ``/peer`` carries signed envelopes from other
nodes, ``/client`` the client protocol. For every direct link of the topology the node
dials the neighbour and keeps one outbound connection (its *link*): a task that takes
frames off a bounded queue and sends them, reconnecting with exponential back-off and
jitter when the connection fails. Frames arrive on the neighbour's own outbound
connection, which is this node's inbound one — one receive task per connection.

A link is *down* once a connection attempt failed or its connection closed, and *up*
again when a connection succeeds; each change is reported to ``on_link_change`` (the node
routes around down links). A link notices a closed connection at once — a watcher reads
the outbound connection, on which the peer never sends — not only on its next send.

A full send queue does not grow: the frame is dropped and counted (``queue-full``), which
is what a consensus protocol that retransmits wants from a slow or dead peer. A frame
larger than the websocket limit closes the connection (counted ``too-large``); frames up to
that limit reach the envelope layer, which refuses anything over ``max_frame`` before
decoding it.

TLS: a ``wss://`` endpoint serves with its ``tls_cert``/``tls_key``. A dialling node
verifies the certificate against ``tls_ca`` when given, pins its SHA-256 fingerprint when
``tls_fingerprint`` is given (then no CA is needed), and otherwise uses the system CAs.
"""

from __future__ import annotations

import hashlib
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
)

from .spec import ClusterSpec, Endpoint, NodeTLS

__all__ = [
    "NETWORK_ERRORS",
    "FingerprintMismatch",
    "LinkStats",
    "Transport",
    "client_ssl_context",
    "connect",
    "server_ssl_context",
]

WS_CLOSE_TOO_BIG = 1009
_RECEIVE_BUFFER = 1 << 16


class FingerprintMismatch(ssl.SSLError):
    """The peer's certificate is not the pinned one."""


NETWORK_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ssl.SSLError,
    HandshakeError,
    ConnectionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
)
"""What a connection attempt or a broken connection raises; a link retries after them."""


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@dataclass
class LinkStats:
    """Health of one outbound link (to a direct neighbour)."""

    peer: str
    connected: bool = False
    down: bool = False  # known to have failed (not merely not yet connected)
    sent: int = 0
    dropped: int = 0
    connects: int = 0
    failures: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stats as a plain dict (for ``cluster status``)."""
        return {
            "peer": self.peer,
            "connected": self.connected,
            "down": self.down,
            "sent": self.sent,
            "dropped": self.dropped,
            "connects": self.connects,
            "failures": self.failures,
            "last_error": self.last_error,
        }


def server_ssl_context(tls: NodeTLS) -> ssl.SSLContext:
    """The server side of ``wss://``: the node's certificate and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert tls.cert is not None and tls.key is not None
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def client_ssl_context(tls: NodeTLS) -> ssl.SSLContext:
    """The dialling side: a CA, a pinned fingerprint, or the system's CAs."""
    if tls.fingerprint is not None and tls.ca is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the fingerprint check below replaces it
        return ctx
    ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    return ctx


async def connect(
    nursery: trio.Nursery,
    endpoint: Endpoint,
    resource: str,
    *,
    tls: NodeTLS | None = None,
    max_message_size: int = 1 << 21,
    connect_timeout: float = 5.0,
) -> WebSocketConnection:
    """Open a websocket to ``endpoint`` (checking a pinned certificate fingerprint).

    Raises ``OSError``, ``ssl.SSLError`` (:class:`FingerprintMismatch`),
    ``HandshakeError`` or ``trio.TooSlowError``.
    """
    with trio.fail_after(connect_timeout):
        stream: Any = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        if endpoint.tls:
            tls = tls or NodeTLS()
            ssl_stream = trio.SSLStream(
                stream, client_ssl_context(tls), server_hostname=endpoint.host
            )
            try:
                await ssl_stream.do_handshake()
                if tls.fingerprint is not None:
                    der = ssl_stream.getpeercert(binary_form=True) or b""
                    got = hashlib.sha256(der).hexdigest()
                    if got != tls.fingerprint:
                        raise FingerprintMismatch(
                            f"certificate of {endpoint.url()} has fingerprint {got[:16]}…, "
                            f"pinned {tls.fingerprint[:16]}…"
                        )
            except BaseException:
                await trio.aclose_forcefully(ssl_stream)
                raise
            stream = ssl_stream
        return await wrap_client_stream(
            nursery,
            stream,
            endpoint.host,
            resource,
            max_message_size=max_message_size,
            receive_buffer_size=_RECEIVE_BUFFER,
        )


class Transport:
    """A node's listener and its outbound links to direct neighbours.

    ``on_frame(data)`` is called for every binary message that arrives on ``/peer``;
    ``on_client(ws)`` serves one ``/client`` connection. ``rejected`` counts refusals.
    ``on_link_change(peer)`` is called when a link goes up or down (see ``links[peer]``).
    """

    def __init__(
        self,
        node_id: str,
        spec: ClusterSpec,
        on_frame: Callable[[bytes], None],
        on_client: Callable[[WebSocketConnection], Awaitable[None]] | None,
        rejected: Counter[str],
        rng: random.Random,
        on_link_change: Callable[[str], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.on_link_change = on_link_change
        self.spec = spec
        self.endpoint = spec.endpoints[node_id]
        self.on_frame = on_frame
        self.on_client = on_client
        self.rejected = rejected
        self.rng = rng
        self.max_frame = spec.runtime.max_frame
        # the websocket layer lets a somewhat oversized frame through so the envelope
        # layer can count it; a grossly oversized one closes the connection
        self.ws_limit = 2 * self.max_frame + 4096
        self.neighbours = spec.topology.neighbours(node_id)
        self.links = {p: LinkStats(p) for p in self.neighbours}
        self._queues: dict[str, tuple[trio.MemorySendChannel[bytes], Any]] = {
            p: trio.open_memory_channel[bytes](spec.runtime.send_queue) for p in self.neighbours
        }
        self.inbound = 0
        self.received = 0
        """Frames that arrived on ``/peer`` (checked or not)."""
        self.port: int | None = None

    # ------------------------------------------------------------------ sending

    def send(self, neighbour: str, frame: bytes) -> bool:
        """Queue ``frame`` for a direct neighbour; False (dropped, counted) when full/unknown."""
        queue = self._queues.get(neighbour)
        if queue is None:
            self.rejected["no-route"] += 1
            return False
        try:
            queue[0].send_nowait(frame)
        except trio.WouldBlock:
            self.links[neighbour].dropped += 1
            return False
        return True

    def live(self, neighbour: str) -> bool:
        """True unless the link to ``neighbour`` is known to be down."""
        stats = self.links.get(neighbour)
        return stats is not None and not stats.down

    def queued(self, neighbour: str) -> int:
        """Frames waiting in the queue of a link."""
        return int(self._queues[neighbour][0].statistics().current_buffer_used)

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, then dial every neighbour; runs until cancelled. Reports the port."""
        ssl_ctx = server_ssl_context(self.spec.tls[self.node_id]) if self.endpoint.tls else None
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    self._handle,
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl_ctx,
                    handler_nursery=nursery,
                    max_message_size=self.ws_limit,
                    receive_buffer_size=_RECEIVE_BUFFER,
                    connect_timeout=10,
                    disconnect_timeout=2,
                    task_status=task_status,
                )
            )
            self.port = server.port
            for peer in self.neighbours:
                nursery.start_soon(self._link, peer)
            task_status.started(self.port)

    async def _handle(self, request: WebSocketRequest) -> None:
        path = request.path
        if path == "/peer":
            ws = await request.accept()
            await self._receive_peer(ws)
        elif path == "/client" and self.on_client is not None:
            ws = await request.accept()
            await self.on_client(ws)
        else:
            self.rejected["bad-path"] += 1
            await request.reject(404)

    async def _receive_peer(self, ws: WebSocketConnection) -> None:
        self.inbound += 1
        try:
            while True:
                data = await ws.get_message()
                self.received += 1
                if not isinstance(data, bytes):
                    self.rejected["malformed"] += 1
                    continue
                self.on_frame(data)
        except ConnectionClosed as exc:
            if exc.reason is not None and exc.reason.code == WS_CLOSE_TOO_BIG:
                self.rejected["too-large"] += 1
        finally:
            self.inbound -= 1

    async def _link(self, peer: str) -> None:
        stats = self.links[peer]
        endpoint = self.spec.endpoints[peer]
        receive = self._queues[peer][1]
        delay = self.spec.runtime.reconnect_min_s
        while True:
            try:
                async with trio.open_nursery() as n:
                    ws = await connect(
                        n,
                        endpoint,
                        "/peer",
                        tls=self.spec.tls[peer],
                        max_message_size=self.ws_limit,
                    )
                    stats.connected = True
                    stats.connects += 1
                    self._set_down(stats, False)
                    delay = self.spec.runtime.reconnect_min_s
                    n.start_soon(self._watch, ws)
                    try:
                        while True:
                            frame = await receive.receive()
                            await ws.send_message(frame)
                            stats.sent += 1
                    finally:
                        stats.connected = False
                        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                            await ws.aclose()
            except* NETWORK_ERRORS as group:
                exc = _first_leaf(group)
                stats.failures += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"[:200]
                self._set_down(stats, True)
            # exponential back-off with full jitter in [delay/2, delay]
            await trio.sleep(delay * (0.5 + 0.5 * self.rng.random()))
            delay = min(self.spec.runtime.reconnect_max_s, delay * 2)

    def _set_down(self, stats: LinkStats, down: bool) -> None:
        if stats.down != down:
            stats.down = down
            if self.on_link_change is not None:
                self.on_link_change(stats.peer)

    @staticmethod
    async def _watch(ws: WebSocketConnection) -> None:
        """Raise ``ConnectionClosed`` as soon as the outbound connection closes."""
        while True:
            await ws.get_message()  # the peer sends nothing here; ignore whatever comes
