"""The client protocol: submit, read and status over a node's ``/client`` websocket.

Every message is one msgpack map. Requests::

    {"id": 7, "op": "submit", "command": {...}, "client": "c1", "seq": 3}
    {"id": 8, "op": "read", "query": {"op": "get", "key": "a"}}
    {"id": 9, "op": "status"}
    {"id": 10, "op": "transfer", "target": "n2"}            # to the leader only

``client``/``seq`` are optional: with them a retried submit (to any node) is applied once;
without them the node assigns a session lane of its own. Replies::

    {"id": 7, "ok": true, "result": [value, null]}          # or [null, [code, message]]
    {"id": 7, "ok": false, "error": "TIMEOUT", "message": "…"}

Requests on one connection are served concurrently (up to 1024 in flight), so a client
may pipeline. A malformed or oversized request is answered with ``BAD_REQUEST`` where it
has an id, counted in the node's ``rejected["client-…"]``, and changes nothing.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core.base import TransferRefused
from .node import NodeError, NotLeaderError, SubmitTimeout, decode_result, encode_result
from .spec import ClusterSpec, Endpoint, NodeTLS
from .transport import NETWORK_ERRORS, connect

if TYPE_CHECKING:
    from .node import Node

__all__ = ["ClientError", "ClusterClient", "NodeClient", "serve_client"]

_MAX_IN_FLIGHT = 1024


class ClientError(Exception):
    """A request failed: ``code`` is ``TIMEOUT``, ``BAD_REQUEST``, ``UNAVAILABLE``, …"""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


async def serve_client(node: Node, ws: WebSocketConnection) -> None:
    """Serve one client connection until it closes."""
    limit = trio.Semaphore(_MAX_IN_FLIGHT)
    send_lock = trio.Lock()

    async def reply(message: dict[str, Any]) -> None:
        async with send_lock:
            with contextlib.suppress(ConnectionClosed):
                await ws.send_message(_pack(message))

    async def handle(req: dict[str, Any]) -> None:
        try:
            await reply(await _answer(node, req))
        finally:
            limit.release()

    try:
        async with trio.open_nursery() as nursery:
            while True:
                data = await ws.get_message()
                req = _parse_request(node, data)
                if req is None:
                    await reply(
                        {"id": None, "ok": False, "error": "BAD_REQUEST", "message": "malformed"}
                    )
                    continue
                await limit.acquire()  # back-pressure: stop reading at the in-flight limit
                nursery.start_soon(handle, req)
    except* ConnectionClosed:
        pass


def _parse_request(node: Node, data: Any) -> dict[str, Any] | None:
    if not isinstance(data, bytes):
        node.rejected["client-malformed"] += 1
        return None
    if len(data) > node.max_frame:
        node.rejected["client-too-large"] += 1
        return None
    try:
        req = msgpack.unpackb(data, raw=False, max_map_len=16)
    except Exception:
        req = None
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        node.rejected["client-malformed"] += 1
        return None
    return req


async def _answer(node: Node, req: dict[str, Any]) -> dict[str, Any]:
    rid = req.get("id")
    op = req["op"]
    timeout = req.get("timeout")
    if not isinstance(timeout, int | float) or not 0 < timeout <= 600 or math.isnan(timeout):
        timeout = None
    try:
        if op == "submit":
            client, seq = req.get("client"), req.get("seq")
            if client is None and seq is None:
                result = await node.submit(req.get("command"), timeout=timeout)
            elif isinstance(client, str) and client and type(seq) is int and seq >= 1:
                limit = timeout or node.spec.runtime.submit_timeout_s
                result = await node._submit_as(client, seq, req.get("command"), limit)
            else:
                node.rejected["client-bad-field"] += 1
                return _error(rid, "BAD_REQUEST", "client must be a string and seq an integer >= 1")
            return {"id": rid, "ok": True, "result": encode_result(result)}
        if op == "read":
            result = await node.read(req.get("query"), timeout=timeout)
            return {"id": rid, "ok": True, "result": encode_result(result)}
        if op == "status":
            return {"id": rid, "ok": True, "result": [node.status(), None]}
        if op == "transfer":
            target = req.get("target")
            if not isinstance(target, str):
                node.rejected["client-bad-field"] += 1
                return _error(rid, "BAD_REQUEST", "transfer needs a string target")
            node.transfer_leadership(target)
            return {"id": rid, "ok": True, "result": [None, None]}
    except TransferRefused as exc:
        return _error(rid, "REFUSED", str(exc))
    except NotLeaderError as exc:
        return {**_error(rid, "NOT_LEADER", str(exc)), "leader": exc.leader}
    except SubmitTimeout as exc:
        return _error(rid, "TIMEOUT", str(exc))
    except NodeError as exc:
        return _error(rid, "UNAVAILABLE", str(exc))
    node.rejected["client-unknown-op"] += 1
    return _error(rid, "BAD_REQUEST", f"unknown op {op!r:.40}")


def _error(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": code, "message": message}


_CLIENT_ERRORS: tuple[type[Exception], ...] = (*NETWORK_ERRORS, ClientError)


class NodeClient:
    """A trio client of one node; requests may be issued concurrently (pipelined).

    Use as ``async with NodeClient.open(endpoint) as c: await c.submit(cmd)``.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._next = 0
        self._pending: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._closed: BaseException | None = None

    @classmethod
    def open(cls, endpoint: Endpoint | str, tls: NodeTLS | None = None) -> _ClientContext:
        """An async context manager that connects to ``endpoint``'s ``/client``."""
        ep = Endpoint.parse(endpoint) if isinstance(endpoint, str) else endpoint
        return _ClientContext(ep, tls)

    async def _reader(self) -> None:
        try:
            while True:
                data = await self.ws.get_message()
                msg = msgpack.unpackb(data, raw=False)
                rid = msg.get("id") if isinstance(msg, dict) else None
                slot = self._pending.pop(rid, None) if type(rid) is int else None
                if slot is not None:
                    slot[1].append(msg)
                    slot[0].set()
        except ConnectionClosed as exc:
            self._closed = exc
            for event, _ in self._pending.values():
                event.set()

    async def request(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        """Send one request and return its decoded result, or raise :class:`ClientError`."""
        if self._closed is not None:
            raise ClientError("UNAVAILABLE", "connection closed")
        self._next += 1
        rid = self._next
        event, box = trio.Event(), list[Any]()
        self._pending[rid] = (event, box)
        msg = {"id": rid, "op": op, **fields}
        if timeout is not None:
            msg["timeout"] = timeout
        try:
            await self.ws.send_message(_pack(msg))
        except ConnectionClosed:
            self._pending.pop(rid, None)
            raise ClientError("UNAVAILABLE", "connection closed") from None
        await event.wait()
        if not box:
            raise ClientError("UNAVAILABLE", "connection closed before the reply")
        reply = box[0]
        if not reply.get("ok"):
            raise ClientError(str(reply.get("error")), str(reply.get("message")))
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


class _ClientContext:
    def __init__(self, endpoint: Endpoint, tls: NodeTLS | None) -> None:
        self.endpoint = endpoint
        self.tls = tls
        self._nursery_cm: Any = None

    async def __aenter__(self) -> NodeClient:
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        try:
            ws = await connect(nursery, self.endpoint, "/client", tls=self.tls)
        except BaseException as exc:
            await self._nursery_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        client = NodeClient(ws)
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
    ``submit`` so that a retry on the next node is applied at most once.
    """

    def __init__(self, spec: ClusterSpec, prefer: str | None = None, *, only: bool = False) -> None:
        self.spec = spec
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
                    async with NodeClient.open(self.spec.endpoints[node], self.spec.tls[node]) as c:
                        return node, await c.request(op, timeout, **fields)
            except* _CLIENT_ERRORS as group:
                exc = group.exceptions[0]
                while isinstance(exc, BaseExceptionGroup):
                    exc = exc.exceptions[0]
                errors.append(f"{node}: {type(exc).__name__}: {exc}")
        raise ClientError("UNAVAILABLE", "; ".join(errors))
