"""Embedding a node in a program: ``open_node`` for trio, :class:`BlockingNode` for the rest.

Trio programs::

    async with open_node("cluster.toml", "n1", KVStateMachine()) as node:
        await node.submit({"op": "put", "key": "a", "value": "1"})
        print(await node.read({"op": "get", "key": "a"}))
        await node.change_membership("add-learner", "n4")   # n4: a spare of the spec

Threaded or asyncio services use the blocking facade, which runs the node's trio loop in
a background thread and hands calls to it::

    with BlockingNode("cluster.toml", "n1", KVStateMachine()) as node:
        node.submit({"op": "put", "key": "a", "value": "1"})   # blocks this thread only

From asyncio, call the blocking methods in a thread: ``await asyncio.to_thread(node.submit, cmd)``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from ..core.base import ConfChangeKind
from ..identity import NodeIdentity, load_key_file, load_manifest
from ..statemachine import StateMachine
from ..storage import RaftStorage
from .node import Node
from .spec import ClusterSpec, load_spec

__all__ = ["BlockingNode", "build_node", "load_client_keys", "load_peer_keys", "open_node"]


def load_peer_keys(spec: ClusterSpec) -> dict[str, bytes]:
    """Every node's public key, from the signed manifests beside the spec's key files."""
    return {n: load_manifest(spec.manifest_file(n), n)[1] for n in spec.ids}


def load_client_keys(spec: ClusterSpec) -> dict[str, bytes]:
    """The public key of every ``[[clients]]`` entry: given in the spec, or from its manifest.

    Raises :class:`~ruflo_consensus.identity.IdentityError` when a manifest is missing,
    does not verify, or names another id.
    """
    keys = {}
    for cid, client in spec.clients.items():
        if client.public_key is not None:
            keys[cid] = client.public_key
        else:
            assert client.manifest_file is not None
            keys[cid] = load_manifest(client.manifest_file, cid)[1]
    return keys


def build_node(
    spec: ClusterSpec | str | Path,
    node_id: str,
    state_machine: StateMachine,
    *,
    identity: NodeIdentity | None = None,
    storage: RaftStorage | None = None,
    **options: Any,
) -> Node:
    """A :class:`Node` for ``node_id`` of ``spec`` (a spec object or a TOML path).

    The node's key file is the spec's (refused when others can read it, see
    :func:`~ruflo_consensus.identity.load_key_file`); peers' and clients' public keys come
    from their manifests (or the spec). ``options`` go to :class:`Node` (``seed``,
    ``core_factory``, …).
    """
    sp = spec if isinstance(spec, ClusterSpec) else load_spec(spec)
    sp.check_node(node_id)
    ident = identity or load_key_file(sp.key_files[node_id], node_id)
    options.setdefault("client_keys", load_client_keys(sp))
    return Node(sp, ident, load_peer_keys(sp), state_machine, storage=storage, **options)


@asynccontextmanager
async def open_node(
    spec: ClusterSpec | str | Path,
    node_id: str,
    state_machine: StateMachine,
    **options: Any,
) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block (trio only).

    The node is listening when the block starts; it is stopped (its tasks cancelled, its
    storage closed) when the block ends. If the node crashes, the exception propagates
    out of the block. An exception the block raises (a ``SubmitTimeout`` it did not
    catch, …) comes out of it as itself, not wrapped in the node's nursery's
    ``ExceptionGroup``, so ``except SubmitTimeout`` around the block catches it.
    """
    node = build_node(spec, node_id, state_machine, **options)
    raised: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        except BaseException as exc:  # re-raised below, once the node has stopped
            raised = exc
        nursery.cancel_scope.cancel()
    if raised is not None:
        raise raised


class BlockingNode:
    """A node whose trio loop runs in a background thread; every method blocks the caller.

    ``start()`` (or ``with``) returns once the node listens; ``close()`` stops it and joins
    the thread. If the node crashes, the next call raises the crash's exception.
    """

    def __init__(
        self,
        spec: ClusterSpec | str | Path,
        node_id: str,
        state_machine: StateMachine,
        **options: Any,
    ) -> None:
        self._args = (spec, node_id, state_machine)
        self._options = options
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.node: Node | None = None

    def start(self, timeout: float = 30.0) -> BlockingNode:
        """Start the background thread and wait until the node listens."""
        if self._thread is not None:
            raise RuntimeError("the node is already started")
        self._thread = threading.Thread(target=self._main, name="ruflo-node", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the node did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            trio.run(self._amain)
        except BaseException as exc:  # reported to the caller by the next call
            self._error = exc
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_node(*self._args, **self._options) as node:
            self.node = node
            self._ready.set()
            await self._stop.wait()

    def _running(self) -> Node:
        """The running node, or the crash's exception / RuntimeError when there is none."""
        if self._error is not None:
            raise self._error
        if self._token is None or self.node is None:
            raise RuntimeError("the node is not running")
        return self.node

    def _call(self, fn: Any, *args: Any) -> Any:
        self._running()
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise self._error or RuntimeError("the node has stopped") from None

    def submit(self, command: Any, timeout: float | None = None) -> Any:
        """Replicate ``command`` and return its result (see :meth:`Node.submit`)."""
        node = self._running()
        return self._call(lambda: node.submit(command, timeout=timeout))

    def read(self, query: Any, timeout: float | None = None) -> Any:
        """A linearizable read (see :meth:`Node.read`)."""
        node = self._running()
        return self._call(lambda: node.read(query, timeout=timeout))

    def change_membership(
        self, kind: ConfChangeKind | str, node_id: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Change the membership by one server; the new configuration (see
        :meth:`Node.change_membership`). Raises
        :class:`~ruflo_consensus.core.base.ConfChangeRefused` (with ``.reason``) or
        :class:`~ruflo_consensus.runtime.node.SubmitTimeout`."""
        node = self._running()
        result: dict[str, Any] = self._call(
            lambda: node.change_membership(kind, node_id, timeout=timeout)
        )
        return result

    def status(self) -> dict[str, Any]:
        """The node's status map."""
        node = self._running()

        async def get() -> dict[str, Any]:
            return node.status()

        result: dict[str, Any] = self._call(get)
        return result

    def close(self, timeout: float = 10.0) -> None:
        """Stop the node and join its thread."""
        if self._token is not None and self._stop is not None and self._thread is not None:
            stop = self._stop
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> BlockingNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
