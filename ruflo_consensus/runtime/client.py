"""The client protocol: submit, read and status over a node's ``/client`` websocket.

**Authentication.** Every request is a signed envelope, exactly like a frame between
nodes (:func:`~ruflo_consensus.identity.seal`): sender = the client's id, destination =
the node's id, kind :data:`KIND_CLIENT_REQUEST`, payload = the request map below. A node
serves only clients listed in its spec's ``[[clients]]`` (with their public keys), checks
the destination, and keeps a replay window per client (a nonce seen before, or a
timestamp too far from its clock, is refused). Anything else is answered with
``UNAUTHENTICATED`` and counted in ``rejected["client-<reason>"]``: ``client-unsigned``,
``client-unknown-client``, ``client-bad-signature``, ``client-wrong-destination``,
``client-replayed``, ``client-stale``. With ``[runtime] allow_unsigned_clients = true``
(off by default) a node also serves a bare, unsigned request map — for local
experiments only.

**Signed replies.** The answer to a signed request is an envelope too: signed by the
node, addressed to the client, kind :data:`KIND_CLIENT_REPLY`, its payload the reply map
with ``"re"`` = the request's nonce. A :class:`NodeClient` that knows the node's public
key (:class:`ClusterClient` reads it from the node's manifest) accepts a reply only if
the signature verifies, it is addressed to the client, its timestamp and nonce pass a
replay window, and ``re`` names the request it answers; anything else is dropped and
counted in :attr:`NodeClient.bad_replies` (``unsigned``, ``bad-signature``,
``wrong-destination``, ``stale``, ``replayed``, ``unknown-kind``, ``malformed``,
``unmatched``), so a forged, altered or replayed reply is never taken for the answer.
A bare request (unsigned mode) gets a bare reply.

Every request (the envelope's payload) is one msgpack map::

    {"id": 7, "op": "submit", "command": {...}, "client": "c1", "seq": 3}
    {"id": 8, "op": "read", "query": {"op": "get", "key": "a"}}
    {"id": 9, "op": "status"}
    {"id": 10, "op": "transfer", "target": "n2"}            # to the leader only
    {"id": 11, "op": "membership", "kind": "add-learner", "node": "n4"}   # any node

``client``/``seq`` are optional: with them a retried submit (to any node) is applied once;
without them the node assigns a session lane of its own. A client's sessions live in its
own namespace (``<client id>/<client>``), so one client cannot touch another's. Replies::

    {"id": 7, "ok": true, "result": ["ok", value]}   # or ["rejected", code, message]
    {"id": 7, "ok": false, "error": "TIMEOUT", "message": "…"}
    {"id": 11, "ok": false, "error": "REFUSED", "reason": "already-member", "message": "…"}

A ``membership`` request is served by the leader (a follower forwards it) and answers
the new configuration (``{"voters", "learners", "conf_index", "conf_committed"}``) once
it is committed, or ``REFUSED`` with the core's ``reason`` (nothing changed).

Requests on one connection are served concurrently (up to 1024 in flight), so a client
may pipeline. A malformed or oversized request is answered with ``BAD_REQUEST`` where it
has an id, counted in the node's ``rejected["client-…"]``, and changes nothing.

This module is the clients' side; the node's side is :mod:`.client_server`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..identity import (
    EnvelopeError,
    NodeIdentity,
    NonceSource,
    ReplayWindow,
    load_key_file,
    load_manifest,
    open_envelope,
    seal,
)
from ..statemachine import decode_result, pack
from .spec import ClusterSpec, Endpoint, NodeTLS
from .transport import NETWORK_ERRORS, connect

__all__ = [
    "KIND_CLIENT_REPLY",
    "KIND_CLIENT_REQUEST",
    "ClientError",
    "ClusterClient",
    "NodeClient",
    "default_client_identity",
    "is_bare_map",
]

KIND_CLIENT_REQUEST = 16
"""The envelope kind of a signed client request."""

KIND_CLIENT_REPLY = 17
"""The envelope kind of a node's signed reply to a signed client request."""

_MAX_REPLY = 64 << 20  # a status map or a large read may exceed the request limit
_FINAL = ("UNAUTHENTICATED", "REFUSED")  # answers ClusterClient does not retry elsewhere


class ClientError(Exception):
    """A request failed: ``code`` is ``TIMEOUT``, ``BAD_REQUEST``, ``UNAVAILABLE``, …

    ``reason`` is set for a refused membership change (``code == "REFUSED"``): the
    core's :attr:`~ruflo_consensus.core.base.ConfChangeRefused.reason`.
    """

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason


def is_bare_map(data: bytes) -> bool:
    """True when ``data`` starts like a msgpack map: a bare (unsigned) request or reply,
    not an envelope (a msgpack array)."""
    return bool(data[:1]) and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF))


_CLIENT_ERRORS: tuple[type[Exception], ...] = (*NETWORK_ERRORS, ClientError)


def default_client_identity(spec: ClusterSpec) -> NodeIdentity | None:
    """The key of the spec's first ``[[clients]]`` entry whose key file exists, or None.

    ``write_local_spec`` and ``cluster up`` generate such a key (``keys/admin.key``), so
    ``kv`` and ``cluster status`` work on a local cluster without ``--key``. Raises
    :class:`~ruflo_consensus.identity.InsecureKeyFile` for a key file others can read.
    """
    for cid, client in spec.clients.items():
        if client.key_file is not None and client.key_file.exists():
            return load_key_file(client.key_file, cid)
    return None


class NodeClient:
    """A trio client of one node; requests may be issued concurrently (pipelined).

    Use as ``async with NodeClient.open(endpoint, identity=key, node_id="n1",
    node_key=pub) as c: await c.submit(cmd)``. With an ``identity`` every request is
    signed for ``node_id``; without one requests go unsigned (served only where
    ``allow_unsigned_clients``). With ``node_key`` (the node's Ed25519 public key, which
    needs an ``identity``) only replies the node signed for this request are accepted
    (see the module's *Signed replies*); others are dropped and counted in
    :attr:`bad_replies`.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        identity: NodeIdentity | None = None,
        node_id: str | None = None,
        node_key: bytes | None = None,
    ) -> None:
        _check_client_args(identity, node_id, node_key)
        self.ws = ws
        self.identity = identity
        self.node_id = node_id
        self.node_key = node_key
        self.nonces = NonceSource()
        self.window = ReplayWindow()
        self.bad_replies: Counter[str] = Counter()
        """Replies dropped because they do not prove they answer our request, per reason."""
        self._next = 0
        self._pending: dict[int, tuple[trio.Event, list[Any], bytes | None]] = {}
        self._closed: BaseException | None = None

    @classmethod
    def open(
        cls,
        endpoint: Endpoint | str,
        tls: NodeTLS | None = None,
        *,
        identity: NodeIdentity | None = None,
        node_id: str | None = None,
        node_key: bytes | None = None,
    ) -> _ClientContext:
        """An async context manager that connects to ``endpoint``'s ``/client``."""
        _check_client_args(identity, node_id, node_key)
        ep = Endpoint.parse(endpoint) if isinstance(endpoint, str) else endpoint
        return _ClientContext(ep, tls, identity, node_id, node_key)

    def frame(self, message: dict[str, Any]) -> bytes:
        """The bytes of one request: signed for the node, or the bare map without a key."""
        data = pack(message)
        if self.identity is None:
            return data
        assert self.node_id is not None
        return seal(self.identity, self.node_id, KIND_CLIENT_REQUEST, data, self.nonces)

    def _open_reply(self, data: Any) -> dict[str, Any] | None:
        """The reply map in ``data``, or None (counted) when it cannot be trusted."""
        if self.node_key is None:
            return _reply_map(data)
        assert self.identity is not None and self.node_id is not None
        if not isinstance(data, bytes) or is_bare_map(data):
            self.bad_replies["unsigned"] += 1  # a bare map: anyone on the wire could send it
            return None
        try:
            env = open_envelope(
                data,
                {self.node_id: self.node_key},
                self.window,
                me=self.identity.node_id,
                max_size=_MAX_REPLY,
            )
        except EnvelopeError as exc:
            self.bad_replies[exc.reason] += 1
            return None
        if env.kind != KIND_CLIENT_REPLY:
            self.bad_replies["unknown-kind"] += 1
            return None
        msg = _reply_map(env.payload)
        if msg is None:
            self.bad_replies["malformed"] += 1
            return None
        rid = msg.get("id")
        slot = self._pending.get(rid) if type(rid) is int else None
        if slot is None or msg.get("re") != slot[2]:
            self.bad_replies["unmatched"] += 1  # not the answer to a request we have open
            return None
        return msg

    async def _reader(self) -> None:
        try:
            while True:
                msg = self._open_reply(await self.ws.get_message())
                rid = msg.get("id") if msg is not None else None
                slot = self._pending.pop(rid, None) if type(rid) is int else None
                if slot is not None:
                    assert msg is not None
                    slot[1].append(msg)
                    slot[0].set()
        except ConnectionClosed as exc:
            self._closed = exc
            for event, _, _ in self._pending.values():
                event.set()

    async def request(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        """Send one request and return its decoded result, or raise :class:`ClientError`."""
        if self._closed is not None:
            raise ClientError("UNAVAILABLE", "connection closed")
        self._next += 1
        rid = self._next
        event, box = trio.Event(), list[Any]()
        msg = {"id": rid, "op": op, **fields}
        if timeout is not None:
            msg["timeout"] = timeout
        frame = self.frame(msg)
        self._pending[rid] = (event, box, self.nonces.last if self.identity else None)
        try:
            await self.ws.send_message(frame)
        except ConnectionClosed:
            self._pending.pop(rid, None)
            raise ClientError("UNAVAILABLE", "connection closed") from None
        await event.wait()
        if not box:
            raise ClientError("UNAVAILABLE", "connection closed before the reply")
        reply = box[0]
        if not reply.get("ok"):
            reason = reply.get("reason")
            raise ClientError(
                str(reply.get("error")),
                str(reply.get("message")),
                reason if isinstance(reason, str) else None,
            )
        return decode_result(reply.get("result"))

    async def submit(
        self,
        command: Any,
        *,
        client: str | None = None,
        seq: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Replicate ``command``; the result (or a :class:`CommandRejected`)."""
        fields: dict[str, Any] = {"command": command}
        if client is not None:
            fields.update(client=client, seq=seq)
        return await self.request("submit", timeout, **fields)

    async def read(self, query: Any, *, timeout: float | None = None) -> Any:
        """A linearizable read."""
        return await self.request("read", timeout, query=query)

    async def status(self) -> dict[str, Any]:
        """The node's status map."""
        result = await self.request("status")
        assert isinstance(result, dict)
        return result

    async def change_membership(
        self, kind: str, node: str, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """A membership change (see :meth:`Node.change_membership
        <ruflo_consensus.runtime.node.Node.change_membership>`): the new configuration,
        or :class:`ClientError` with ``code == "REFUSED"`` and the ``reason``."""
        result = await self.request("membership", timeout, kind=kind, node=node)
        assert isinstance(result, dict)
        return result


def _reply_map(data: Any) -> dict[str, Any] | None:
    """A reply's map (a status reply has more fields than a request may), or None."""
    try:
        msg = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    return msg if isinstance(msg, dict) else None


def _check_client_args(
    identity: NodeIdentity | None, node_id: str | None, node_key: bytes | None
) -> None:
    if identity is not None and node_id is None:
        raise ValueError("a signing client needs the node id it talks to")
    if node_key is not None and identity is None:
        raise ValueError("only a signing client gets signed replies: node_key needs identity")


class _ClientContext:
    def __init__(
        self,
        endpoint: Endpoint,
        tls: NodeTLS | None,
        identity: NodeIdentity | None,
        node_id: str | None,
        node_key: bytes | None,
    ) -> None:
        self.endpoint = endpoint
        self.tls = tls
        self.identity = identity
        self.node_id = node_id
        self.node_key = node_key
        self._nursery_cm: Any = None

    async def __aenter__(self) -> NodeClient:
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        try:
            ws = await connect(nursery, self.endpoint, "/client", tls=self.tls)
        except BaseException as exc:
            await self._nursery_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        client = NodeClient(ws, self.identity, self.node_id, self.node_key)
        nursery.start_soon(client._reader)
        self.client = client
        return client

    async def __aexit__(self, *exc: Any) -> bool | None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self.client.ws.aclose()
        result: bool | None = await self._nursery_cm.__aexit__(*exc)
        return result


class ClusterClient:
    """Talks to a cluster by its spec: tries the given node first, then the others.

    With ``only`` it talks to the given node alone. Pass ``client``/``seq`` fields to a
    ``submit`` so that a retry on the next node is applied at most once. Requests are
    signed with ``identity`` (default: :func:`default_client_identity`; unsigned when the
    spec has no client key at hand). An ``UNAUTHENTICATED`` answer is raised at once: the
    other nodes would refuse the key too; so is ``REFUSED`` (the leader said no, and
    every node forwards to it).
    """

    def __init__(
        self,
        spec: ClusterSpec,
        prefer: str | None = None,
        *,
        only: bool = False,
        identity: NodeIdentity | None = None,
    ) -> None:
        self.spec = spec
        self.identity = identity if identity is not None else default_client_identity(spec)
        self._node_keys: dict[str, bytes] = {}
        order = list(spec.ids)
        if prefer is not None:
            spec.check_node(prefer)
            order.remove(prefer)
            order.insert(0, prefer)
            if only:
                order = [prefer]
        self.order = order

    async def call(self, op: str, timeout: float = 10.0, **fields: Any) -> tuple[str, Any]:
        """Run one request on the first node that answers; ``(node, result)``."""
        errors = []
        for node in self.order:
            try:
                with trio.fail_after(timeout):
                    async with self.connect(node) as c:
                        return node, await c.request(op, timeout, **fields)
            except* ClientError as group:
                exc = _first(group)
                assert isinstance(exc, ClientError)
                if exc.code in _FINAL:
                    raise exc from None
                errors.append(f"{node}: {type(exc).__name__}: {exc}")
            except* _CLIENT_ERRORS as group:
                exc = _first(group)
                errors.append(f"{node}: {type(exc).__name__}: {exc}")
        raise ClientError("UNAVAILABLE", "; ".join(errors))

    async def change_membership(
        self, kind: str, node: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """A membership change through the first node that answers; the new configuration.

        Raises :class:`ClientError` (``REFUSED`` with ``reason``, ``TIMEOUT``,
        ``UNAVAILABLE``).
        """
        _, conf = await self.call("membership", timeout, kind=kind, node=node)
        assert isinstance(conf, dict)
        return conf

    def connect(self, node: str) -> _ClientContext:
        """A :class:`NodeClient` of one node of the spec (its endpoint, TLS and our key).

        A signing client also reads the node's public key from its manifest and accepts
        only replies the node signed; a missing or bad manifest raises
        :class:`~ruflo_consensus.identity.IdentityError`.
        """
        self.spec.check_node(node)
        key = None
        if self.identity is not None:
            key = self._node_keys.get(node)
            if key is None:
                key = self._node_keys[node] = load_manifest(self.spec.manifest_file(node), node)[1]
        return NodeClient.open(
            self.spec.endpoints[node],
            self.spec.tls[node],
            identity=self.identity,
            node_id=node,
            node_key=key,
        )


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
