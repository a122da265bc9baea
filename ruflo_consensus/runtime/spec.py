"""A cluster spec for real nodes: the topology plus endpoints, keys, TLS and timing.

The same TOML file drives the simulator (``simulate --topology FILE`` reads only the
topology) and real nodes. ``backend`` (default ``"raft"``) must be one the runtime can
run (:data:`RUNTIME_BACKENDS`): any other is refused with :class:`SpecError`, never run
as Raft. The runtime reads these extra, optional parts::

    [raft]                       # RaftConfig fields (milliseconds)
    tick_ms = 10
    election_timeout_min_ms = 150
    election_timeout_max_ms = 300
    heartbeat_ms = 50

    [runtime]
    storage = "file"             # "file" (the default: a WAL per node) or "memory"
    data_dir = "data"            # the default: WAL at <data_dir>/<node id>, relative to
                                 # the spec; <data_dir>/<node id>.initialised marks a node
                                 # that has saved state (see Node: a node that lost it
                                 # refuses to start as a voter)
    fsync = true
    max_frame = 1048576          # bytes; bigger frames are refused before decoding
    send_queue = 1024            # frames per peer link before frames are dropped
    replay_max_age_s = 30.0
    reconnect_min_s = 0.05
    reconnect_max_s = 2.0
    link_state_s = 1.0           # how often a node floods which of its links are down
    allow_unsigned_clients = false   # true: also serve clients that do not sign (local use)
    parallel_leader_append = true    # a leader sends AppendEntries while its own fsync runs

    [[clients]]                  # who may use the client protocol (/client)
    id = "admin"
    key_file = "keys/admin.key"  # its manifest keys/admin.manifest.json holds the public key
    # public_key = "3b6a…"       # or the 32-byte Ed25519 public key in hex

    [[nodes]]
    id = "n1"
    endpoint = "wss://127.0.0.1:7101"   # ws:// or wss://
    key_file = "keys/n1.key"            # its manifest is keys/n1.manifest.json
    tls_cert = "tls/n1.pem"             # wss: the server certificate and key
    tls_key = "tls/n1-key.pem"
    tls_fingerprint = "ab12…"           # optional: SHA-256 of the DER certificate, pinned
    tls_ca = "tls/ca.pem"               # optional: a CA to verify the certificate with
    join = false                        # true: a spare, outside the bootstrap configuration
    metrics = "127.0.0.1:9101"          # optional: serve Prometheus metrics here (HOST:PORT,
                                        # or a bare port on 127.0.0.1; 0: any free port)

A node with ``join = true`` is a *spare*: it has keys, an endpoint and links like every
other node, but it is not one of the bootstrap voters. It starts empty, never campaigns,
and waits until the leader adds it (``cluster add``); the bootstrap voters are the other
nodes, in spec order.

A node without ``metrics`` opens no metrics port (the default). See ``docs/runtime.md``
(Metrics) for what a scrape of ``http://HOST:PORT/metrics`` returns.

Relative paths are relative to the spec file's folder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.raft import RaftConfig
from ..topology import Topology, TopologyError, load_topology

__all__ = [
    "RUNTIME_BACKENDS",
    "ClientSpec",
    "ClusterSpec",
    "Endpoint",
    "MetricsAddress",
    "NodeTLS",
    "RuntimeOptions",
    "SpecError",
    "load_spec",
]


RUNTIME_BACKENDS: tuple[str, ...] = ("raft",)
"""The ``backend`` values real nodes can run today (the simulator runs more)."""


class SpecError(ValueError):
    """A cluster spec cannot drive real nodes (bad endpoint, unknown field, …)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a node listens: ``ws://host:port`` or ``wss://host:port``."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        """True for ``wss://``."""
        return self.scheme == "wss"

    def url(self, resource: str = "/") -> str:
        """The URL of ``resource`` on this endpoint."""
        return f"{self.scheme}://{self.host}:{self.port}{resource}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``ws://host:port`` / ``wss://host:port``; raise :class:`SpecError`."""
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise SpecError(f"bad endpoint {text!r}: {exc}") from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
            raise SpecError(f"endpoint {text!r} must look like ws://HOST:PORT or wss://HOST:PORT")
        return cls(parts.scheme, parts.hostname, port)


@dataclass(frozen=True)
class MetricsAddress:
    """Where a node serves its Prometheus metrics (a node's ``metrics`` in the spec)."""

    host: str
    port: int  # 0: any free port (the node reports the one it bound)

    def url(self) -> str:
        """The URL a scraper fetches."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @classmethod
    def parse(cls, value: object) -> MetricsAddress:
        """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) or a bare port number (on
        127.0.0.1); raise :class:`SpecError` for anything else."""
        if type(value) is int:
            host, port = "127.0.0.1", value
        elif isinstance(value, str) and value:
            try:
                parts = urlsplit(f"//{value}")
                port_or_none = parts.port
            except ValueError as exc:
                raise SpecError(f"bad metrics address {value!r}: {exc}") from None
            if not parts.hostname or port_or_none is None or parts.netloc != value or "@" in value:
                raise SpecError(f"metrics address {value!r} must look like HOST:PORT")
            host, port = parts.hostname, port_or_none
        else:
            raise SpecError(f"metrics must be a HOST:PORT string or a port number, not {value!r}")
        if not 0 <= port <= 65535:
            raise SpecError(f"metrics port {port} is not in 0..65535")
        return cls(host, port)


@dataclass(frozen=True)
class NodeTLS:
    """TLS material of one node (paths already resolved against the spec's folder)."""

    cert: Path | None = None
    key: Path | None = None
    fingerprint: str | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class RuntimeOptions:
    """Transport and storage settings of the runtime (the ``[runtime]`` table)."""

    data_dir: str = "data"
    storage: str = "file"
    fsync: bool = True
    max_frame: int = 1 << 20
    send_queue: int = 1024
    replay_max_age_s: float = 30.0
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 2.0
    submit_timeout_s: float = 30.0
    max_sessions: int = 256
    link_state_s: float = 1.0
    allow_unsigned_clients: bool = False
    parallel_leader_append: bool = True

    def __post_init__(self) -> None:
        if self.storage not in ("file", "memory"):
            raise SpecError(f"runtime.storage must be 'file' or 'memory', not {self.storage!r}")
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise SpecError("runtime.data_dir must be a folder name (storage = 'memory': no WAL)")
        if self.max_frame < 1024:
            raise SpecError("runtime.max_frame must be at least 1024 bytes")
        if self.send_queue < 1 or self.max_sessions < 1:
            raise SpecError("runtime.send_queue and runtime.max_sessions must be positive")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise SpecError("need 0 < runtime.reconnect_min_s <= runtime.reconnect_max_s")
        if self.replay_max_age_s <= 0 or self.submit_timeout_s <= 0 or self.link_state_s <= 0:
            raise SpecError(
                "runtime.replay_max_age_s, submit_timeout_s and link_state_s must be positive"
            )


@dataclass(frozen=True)
class ClientSpec:
    """A client allowed to use the client protocol: its id and where its public key is.

    ``public_key`` is given in the spec, or read from the manifest beside ``key_file``
    (``key_file`` is also where ``kv`` and ``cluster status`` find the secret key by
    default).
    """

    id: str
    key_file: Path | None = None
    public_key: bytes | None = None

    @property
    def manifest_file(self) -> Path | None:
        """The manifest beside the key file (None without a key file)."""
        from ..identity import manifest_path

        return None if self.key_file is None else manifest_path(self.key_file)


@dataclass(frozen=True)
class ClusterSpec:
    """A topology and what real nodes need on top of it."""

    topology: Topology
    base: Path
    endpoints: dict[str, Endpoint]
    key_files: dict[str, Path]
    tls: dict[str, NodeTLS]
    raft: RaftConfig = field(default_factory=RaftConfig)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    path: Path | None = None
    clients: dict[str, ClientSpec] = field(default_factory=dict)
    spares: frozenset[str] = frozenset()
    metrics: dict[str, MetricsAddress] = field(default_factory=dict)
    """Where each node serves Prometheus metrics; a node not in it serves none."""

    def __post_init__(self) -> None:
        if self.backend not in RUNTIME_BACKENDS:
            raise SpecError(
                f"backend {self.backend!r} cannot run on real nodes; the runtime runs "
                f"{', '.join(repr(b) for b in RUNTIME_BACKENDS)} (the simulator runs more: "
                "simulate --backend)"
            )
        unknown = self.spares - set(self.topology.ids)
        if unknown:
            raise SpecError(f"spare node(s) not in the spec: {', '.join(sorted(unknown))}")
        if not self.voters:
            raise SpecError("every node is a spare (join = true): the cluster needs a voter")

    @property
    def backend(self) -> str:
        """The consensus backend the nodes run (the spec's ``backend``)."""
        return self.topology.backend

    @property
    def ids(self) -> list[str]:
        """Node ids in spec order (bootstrap voters and spares)."""
        return self.topology.ids

    @property
    def voters(self) -> list[str]:
        """The bootstrap voters: every node but the spares, in spec order."""
        return [n for n in self.topology.ids if n not in self.spares]

    def is_spare(self, node_id: str) -> bool:
        """True for a node that starts outside the configuration (``join = true``)."""
        return node_id in self.spares

    def manifest_file(self, node_id: str) -> Path:
        """Where the node's signed manifest (public key) is."""
        from ..identity import manifest_path

        return manifest_path(self.key_files[node_id])

    def data_dir(self, node_id: str) -> Path | None:
        """The node's WAL folder (``None``: ``storage = "memory"``, the log in memory)."""
        if self.runtime.storage == "memory":
            return None
        return _resolve(self.base, self.runtime.data_dir) / node_id

    def state_marker(self, node_id: str) -> Path:
        """``<data_dir>/<node id>.initialised``: written once the node has saved state (with
        memory storage too), beside — not in — its WAL folder, so that a wiped WAL or a
        restart from memory is told apart from a node's very first start."""
        return _resolve(self.base, self.runtime.data_dir) / f"{node_id}.initialised"

    def check_node(self, node_id: str) -> None:
        """Raise :class:`SpecError` unless ``node_id`` is in the spec."""
        if node_id not in self.endpoints:
            raise SpecError(f"node {node_id!r} is not in the spec (nodes: {', '.join(self.ids)})")


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _table(data: dict[str, Any], name: str, allowed: set[str], where: Path) -> dict[str, Any]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: [{name}] must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise SpecError(f"{where}: unknown [{name}] field(s): {', '.join(sorted(unknown))}")
    return raw


def load_spec(path: str | Path) -> ClusterSpec:
    """Load a spec file for real nodes; raise :class:`SpecError` naming the file."""
    from ..identity import IdentityError, check_node_id

    p = Path(path)
    try:
        topology = load_topology(p)
    except TopologyError as exc:
        raise SpecError(str(exc)) from None
    data: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    base = p.resolve().parent
    raft_fields = {f.name for f in fields(RaftConfig)}
    rt_fields = {f.name for f in fields(RuntimeOptions)}
    try:
        raft = RaftConfig(**_table(data, "raft", raft_fields, p))
        runtime = RuntimeOptions(**_table(data, "runtime", rt_fields, p))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{p}: {exc}") from None
    endpoints: dict[str, Endpoint] = {}
    key_files: dict[str, Path] = {}
    tls: dict[str, NodeTLS] = {}
    spares: set[str] = set()
    metrics: dict[str, MetricsAddress] = {}
    raw_nodes = {n["id"]: n for n in data["nodes"]}
    for node in topology.nodes:
        try:
            check_node_id(node.id)
        except IdentityError as exc:
            raise SpecError(f"{p}: {exc}") from None
        if node.endpoint is None:
            raise SpecError(f"{p}: node {node.id!r} needs an endpoint")
        try:
            endpoints[node.id] = Endpoint.parse(node.endpoint)
        except SpecError as exc:
            raise SpecError(f"{p}: node {node.id!r}: {exc}") from None
        key_files[node.id] = _resolve(base, node.key_file or f"keys/{node.id}.key")
        raw = raw_nodes[node.id]

        def opt_path(name: str, raw: dict[str, Any] = raw) -> Path | None:
            v = raw.get(name)
            if v is None:
                return None
            if not isinstance(v, str):
                raise SpecError(f"{p}: nodes.{name} must be a string")
            return _resolve(base, v)

        fp = raw.get("tls_fingerprint")
        if fp is not None and (not isinstance(fp, str) or len(fp.replace(":", "")) != 64):
            raise SpecError(f"{p}: node {node.id!r}: tls_fingerprint must be 64 hex digits")
        tls[node.id] = NodeTLS(
            opt_path("tls_cert"),
            opt_path("tls_key"),
            fp.replace(":", "").lower() if fp else None,
            opt_path("tls_ca"),
        )
        if endpoints[node.id].tls and (tls[node.id].cert is None or tls[node.id].key is None):
            raise SpecError(f"{p}: node {node.id!r} uses wss:// and needs tls_cert and tls_key")
        join = raw.get("join", False)
        if not isinstance(join, bool):
            raise SpecError(f"{p}: node {node.id!r}: join must be true or false")
        if join:
            spares.add(node.id)
        if raw.get("metrics") is not None:
            try:
                metrics[node.id] = MetricsAddress.parse(raw["metrics"])
            except SpecError as exc:
                raise SpecError(f"{p}: node {node.id!r}: {exc}") from None
    clients = _clients(data, base, set(endpoints), p)
    try:
        return ClusterSpec(
            topology,
            base,
            endpoints,
            key_files,
            tls,
            raft,
            runtime,
            p,
            clients,
            frozenset(spares),
            metrics,
        )
    except SpecError as exc:
        raise SpecError(f"{p}: {exc}") from None


def _clients(
    data: dict[str, Any], base: Path, nodes: set[str], where: Path
) -> dict[str, ClientSpec]:
    """The ``[[clients]]`` tables: unique ids (not node ids, no ``/``), a key each."""
    raw_clients = data.get("clients", [])
    if not isinstance(raw_clients, list):
        raise SpecError(f"{where}: clients must be a list of [[clients]] tables")
    clients: dict[str, ClientSpec] = {}
    for i, raw in enumerate(raw_clients):
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: clients[{i}] must be a table")
        unknown = set(raw) - {"id", "key_file", "public_key"}
        if unknown:
            raise SpecError(f"{where}: unknown clients[{i}] field(s): {', '.join(sorted(unknown))}")
        cid, key_file, public_key = raw.get("id"), raw.get("key_file"), raw.get("public_key")
        if not isinstance(cid, str) or not cid or "/" in cid or len(cid) > 128:
            raise SpecError(f"{where}: clients[{i}] needs an id: 1-128 characters, no '/'")
        if cid in clients or cid in nodes:
            raise SpecError(f"{where}: client id {cid!r} is used twice (or by a node)")
        if key_file is not None and not isinstance(key_file, str):
            raise SpecError(f"{where}: client {cid!r}: key_file must be a string")
        key: bytes | None = None
        if public_key is not None:
            try:
                key = bytes.fromhex(public_key) if isinstance(public_key, str) else b""
            except ValueError:
                key = b""
            if len(key) != 32:
                raise SpecError(f"{where}: client {cid!r}: public_key must be 64 hex digits")
        if key_file is None and key is None:
            raise SpecError(f"{where}: client {cid!r} needs a key_file or a public_key")
        path = None if key_file is None else _resolve(base, key_file)
        clients[cid] = ClientSpec(cid, path, key)
    return clients
