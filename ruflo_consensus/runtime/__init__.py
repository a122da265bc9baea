"""Real nodes: the trio driver, the signed websocket transport, clusters and embedding.

* :class:`Node` — one sans-IO core run on trio with real sockets and durable storage;
* :func:`open_node` / :class:`BlockingNode` — the embedding API (trio / threads);
* :class:`NodeClient` / :class:`ClusterClient` — the client protocol;
* :func:`load_spec` — a topology TOML file with endpoints, keys, TLS and timing.

``docs/runtime.md`` and ``docs/embedding.md`` describe them.
"""

from __future__ import annotations

from .client import ClientError, ClusterClient, NodeClient
from .embed import BlockingNode, build_node, load_peer_keys, open_node
from .errors import CapabilityMissing, NodeError, NotLeaderError, NotMemberError, SubmitTimeout
from .localspec import free_ports, write_local_spec
from .node import Node
from .spec import ClusterSpec, Endpoint, NodeTLS, RuntimeOptions, SpecError, load_spec

__all__ = [
    "BlockingNode",
    "CapabilityMissing",
    "ClientError",
    "ClusterClient",
    "ClusterSpec",
    "Endpoint",
    "Node",
    "NodeClient",
    "NodeError",
    "NodeTLS",
    "NotLeaderError",
    "NotMemberError",
    "RuntimeOptions",
    "SpecError",
    "SubmitTimeout",
    "build_node",
    "free_ports",
    "load_peer_keys",
    "load_spec",
    "open_node",
    "write_local_spec",
]
