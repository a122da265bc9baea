"""What a node offers the modules that serve protocols beside its core.

:class:`~.node.Node` drives the core; membership changes (:mod:`.membership`), forwarded
submits (:mod:`.forwarding`) and the server side of the client protocol
(:mod:`.client_server`) run beside it. They talk to the node only through the two
protocols below — public members of :class:`~.node.Node`, which satisfies both — and
never import :mod:`.node`:

* :class:`NodeServices` — for protocol helpers: send a signed envelope to any node
  (routed over the overlay), start a task in the node's nursery, wake the ready task,
  wait for a role change or an applied index, and read the core and its
  :class:`~ruflo_consensus.core.base.Capabilities`;
* :class:`ClientAPI` — for the client server: the node's client API (``submit``,
  ``submit_as``, ``read``, ``status``, ``transfer_leadership``, ``change_membership``)
  and what it needs to authenticate clients and sign its replies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVarTuple

import msgpack

from ..core.base import Capabilities, ConfChangeKind, ConsensusCore, NodeId
from ..identity import NodeIdentity, NonceSource, ReplayWindow
from .spec import ClusterSpec

__all__ = ["ClientAPI", "NodeServices", "decode_list"]

Ts = TypeVarTuple("Ts")


class NodeServices(Protocol):
    """The node as the membership and forwarding modules see it."""

    @property
    def node_id(self) -> NodeId:
        """This node's id."""
        ...

    @property
    def spec(self) -> ClusterSpec:
        """The cluster spec the node runs."""
        ...

    @property
    def core(self) -> ConsensusCore:
        """The core the node drives (role, term, leader, propose)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What the core offers beyond the contract, resolved when the node was built."""
        ...

    @property
    def rejected(self) -> Counter[str]:
        """Refused input, per reason (shown by ``status``)."""
        ...

    @property
    def applied(self) -> int:
        """The highest log index applied to the state machine here."""
        ...

    @property
    def tick_s(self) -> float:
        """Seconds per core tick."""
        ...

    @property
    def retry_s(self) -> float:
        """How long a waiting request waits before it re-checks who leads and re-sends."""
        ...

    def send_envelope(self, dst: NodeId, kind: int, payload: bytes) -> None:
        """Sign ``payload`` as an envelope of ``kind`` for ``dst`` and send it to the next
        hop on the overlay (dropped and counted ``unroutable`` when there is none)."""
        ...

    def spawn(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> bool:
        """Start ``fn(*args)`` in the node's nursery; False (not started) when not running."""
        ...

    def wake(self) -> None:
        """The core may have effects: let the ready task take them."""
        ...

    async def wait_role_change(self, timeout: float) -> None:
        """Return at the core's next role (or leader) change, or after ``timeout`` s."""
        ...

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Return once ``index`` is applied here; ``trio.TooSlowError`` after ``timeout``."""
        ...


class ClientAPI(Protocol):
    """The node as the client server sees it: its client API and its credentials."""

    @property
    def node_id(self) -> NodeId:
        """This node's id (a signed request must be addressed to it)."""
        ...

    @property
    def spec(self) -> ClusterSpec:
        """The cluster spec (``allow_unsigned_clients``, ``submit_timeout_s``)."""
        ...

    @property
    def identity(self) -> NodeIdentity:
        """The node's key: signs its replies."""
        ...

    @property
    def nonces(self) -> NonceSource:
        """The nonces of the envelopes the node signs."""
        ...

    @property
    def client_keys(self) -> dict[str, bytes]:
        """Every client allowed on ``/client``, with its public key."""
        ...

    @property
    def client_window(self) -> ReplayWindow:
        """The replay window of client requests."""
        ...

    @property
    def max_frame(self) -> int:
        """The largest frame accepted."""
        ...

    @property
    def rejected(self) -> Counter[str]:
        """Refused input, per reason (client refusals as ``client-<reason>``)."""
        ...

    async def submit(self, command: Any, *, timeout: float | None = None) -> Any:
        """Replicate ``command`` in a session lane of the node's own."""
        ...

    async def submit_as(self, client: str, seq: int, command: Any, timeout: float) -> Any:
        """Replicate ``command`` as session ``(client, seq)`` (a retry is applied once)."""
        ...

    async def read(self, query: Any, *, timeout: float | None = None) -> Any:
        """A linearizable read."""
        ...

    def status(self) -> dict[str, Any]:
        """The node's status map."""
        ...

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` (on the leader)."""
        ...

    async def change_membership(
        self, kind: ConfChangeKind | str, node_id: NodeId, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """A single-server membership change; the new configuration."""
        ...


def decode_list(payload: bytes, size: int | None, rejected: Counter[str]) -> list[Any] | None:
    """An envelope payload that is a msgpack list of ``size`` items (any length for None),
    or None, counted in ``rejected["malformed"]``."""
    try:
        raw = msgpack.unpackb(payload, raw=False, max_array_len=1 << 16)
    except Exception:
        raw = None
    if not isinstance(raw, list) or (size is not None and len(raw) != size):
        rejected["malformed"] += 1
        return None
    return raw
