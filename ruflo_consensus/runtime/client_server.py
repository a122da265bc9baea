"""The node's side of the client protocol: authenticate, serve, answer (signed).

:func:`serve_client` serves one ``/client`` websocket connection of a node; the protocol
(request and reply maps, signatures, refusals) is described in :mod:`.client`, whose
clients talk to it. It reaches the node through :class:`~.services.ClientAPI` only —
the node's public client API and the keys it checks requests and signs replies with.

A core without a capability asked for (``transfer`` on a core without leadership
transfer, ``membership`` on one without membership changes) is answered ``REFUSED`` with
reason ``unsupported`` (:class:`~.errors.CapabilityMissing`): every node of a cluster
runs the same backend, so no other node would do it either.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core.base import ConfChangeRefused, TransferRefused
from ..identity import (
    BadEnvelopeSignature,
    EnvelopeError,
    UnknownSender,
    parse_frame,
    seal,
    verify_envelope,
)
from ..statemachine import encode_result, pack
from .client import KIND_CLIENT_REPLY, KIND_CLIENT_REQUEST, is_bare_map
from .errors import CapabilityMissing, NodeError, NotLeaderError, SubmitTimeout
from .services import ClientAPI

__all__ = ["serve_client"]

_MAX_IN_FLIGHT = 1024
_UNSIGNED = "/unsigned"  # the session namespace of unsigned clients (ids cannot hold "/")


async def serve_client(node: ClientAPI, ws: WebSocketConnection) -> None:
    """Serve one client connection until it closes."""
    limit = trio.Semaphore(_MAX_IN_FLIGHT)
    send_lock = trio.Lock()

    async def reply(message: dict[str, Any], origin: _Origin | None) -> None:
        if origin is None:  # a bare request (or one too broken to say who sent it)
            data = pack(message)
        else:
            sender, nonce = origin
            payload = pack({**message, "re": nonce})
            data = seal(node.identity, sender, KIND_CLIENT_REPLY, payload, node.nonces)
        async with send_lock:
            with contextlib.suppress(ConnectionClosed):
                await ws.send_message(data)

    async def handle(req: dict[str, Any], principal: str, origin: _Origin | None) -> None:
        try:
            await reply(await _answer(node, req, principal), origin)
        finally:
            limit.release()

    try:
        async with trio.open_nursery() as nursery:
            while True:
                data = await ws.get_message()
                try:
                    req, principal, origin = _parse_request(node, data)
                except _Refused as exc:
                    node.rejected[f"client-{exc.reason}"] += 1
                    await reply(_error(exc.rid, exc.code, exc.message), exc.origin)
                    continue
                await limit.acquire()  # back-pressure: stop reading at the in-flight limit
                nursery.start_soon(handle, req, principal, origin)
    except* ConnectionClosed:
        pass


_Origin = tuple[str, bytes]
"""Who signed a request and its nonce: where a signed reply goes and what it names."""


class _Refused(Exception):
    """A client frame that is not served: counted as ``client-<reason>``, answered ``code``
    (signed to ``origin`` when the frame was an envelope)."""

    def __init__(
        self,
        reason: str,
        message: str,
        rid: Any = None,
        code: str = "BAD_REQUEST",
        origin: _Origin | None = None,
    ):
        super().__init__(message)
        self.reason, self.message, self.rid, self.code = reason, message, rid, code
        self.origin = origin


def _unpack_map(data: bytes) -> dict[str, Any] | None:
    try:
        req = msgpack.unpackb(data, raw=False, max_map_len=16)
    except Exception:
        return None
    return req if isinstance(req, dict) else None


def _request_id(payload: bytes) -> Any:
    """The id of a request we do not serve (so that the client can match the refusal)."""
    req = _unpack_map(payload)
    rid = None if req is None else req.get("id")
    return rid if type(rid) is int else None


def _parse_request(node: ClientAPI, data: Any) -> tuple[dict[str, Any], str, _Origin | None]:
    """Authenticate and decode one client frame: ``(request, principal, origin)`` (origin
    None for a bare request), or raise :class:`_Refused`."""
    if not isinstance(data, bytes):
        raise _Refused("malformed", "client frames are binary")
    if len(data) > node.max_frame:
        raise _Refused("too-large", f"over the {node.max_frame}-byte limit")
    if is_bare_map(data):
        req = _unpack_map(data)
        rid = _request_id(data)
        if not node.spec.runtime.allow_unsigned_clients:
            raise _Refused("unsigned", "requests must be signed by a listed client", rid, _AUTH)
        principal, origin = _UNSIGNED, None
    else:
        try:
            env, body, signature, _hops = parse_frame(data, node.max_frame)
        except EnvelopeError as exc:
            raise _Refused("malformed", str(exc)) from None
        rid = _request_id(env.payload)
        origin = (env.sender, env.nonce)
        try:
            verify_envelope(env, body, signature, node.client_keys)
        except UnknownSender:
            raise _Refused(
                "unknown-client", f"{env.sender!r:.60} is not a client", rid, _AUTH, origin
            ) from None
        except BadEnvelopeSignature:
            raise _Refused(
                "bad-signature", "the signature does not verify", rid, _AUTH, origin
            ) from None
        if env.dst != node.node_id:
            raise _Refused(
                "wrong-destination",
                f"signed for {env.dst!r:.60}, not this node",
                rid,
                _AUTH,
                origin,
            )
        if env.kind != KIND_CLIENT_REQUEST:
            raise _Refused(
                "unknown-kind", f"envelope kind {env.kind} is not a request", rid, origin=origin
            )
        try:
            node.client_window.check(env.sender, env.nonce, env.timestamp_ms)
        except EnvelopeError as exc:
            raise _Refused(exc.reason, str(exc), rid, _AUTH, origin) from None
        req = _unpack_map(env.payload)
        principal = env.sender
    if req is None or not isinstance(req.get("op"), str):
        raise _Refused("malformed", "a request is a map with an op", rid, origin=origin)
    return req, principal, origin


_AUTH = "UNAUTHENTICATED"


async def _answer(node: ClientAPI, req: dict[str, Any], principal: str) -> dict[str, Any]:
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
                session = f"{principal}/{client}"
                result = await node.submit_as(session, seq, req.get("command"), limit)
            else:
                node.rejected["client-bad-field"] += 1
                return _error(rid, "BAD_REQUEST", "client must be a string and seq an integer >= 1")
            return {"id": rid, "ok": True, "result": encode_result(result)}
        if op == "read":
            result = await node.read(req.get("query"), timeout=timeout)
            return {"id": rid, "ok": True, "result": encode_result(result)}
        if op == "status":
            return {"id": rid, "ok": True, "result": encode_result(node.status())}
        if op == "transfer":
            target = req.get("target")
            if not isinstance(target, str):
                node.rejected["client-bad-field"] += 1
                return _error(rid, "BAD_REQUEST", "transfer needs a string target")
            node.transfer_leadership(target)
            return {"id": rid, "ok": True, "result": encode_result(None)}
        if op == "membership":
            kind, target = req.get("kind"), req.get("node")
            if not isinstance(kind, str) or not isinstance(target, str):
                node.rejected["client-bad-field"] += 1
                return _error(rid, "BAD_REQUEST", "membership needs a string kind and node")
            conf = await node.change_membership(kind, target, timeout=timeout)
            return {"id": rid, "ok": True, "result": encode_result(conf)}
    except ConfChangeRefused as exc:
        return {**_error(rid, "REFUSED", exc.detail), "reason": exc.reason}
    except TransferRefused as exc:
        return _error(rid, "REFUSED", str(exc))
    except CapabilityMissing as exc:
        return {**_error(rid, "REFUSED", str(exc)), "reason": "unsupported"}
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
