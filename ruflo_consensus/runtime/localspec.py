"""Write a cluster spec for nodes on 127.0.0.1 with free ports and fresh keys.

Tests, the benchmark and the docs (docs/getting-started.md: there is no CLI command for it
yet) use it to get a self-contained folder::

    folder/
      cluster.toml       the spec (topology kind, endpoints, key files, [raft], [runtime])
      keys/n1.key        mode 0600, one per node, and keys/n1.manifest.json
      keys/admin.key     the client key ``kv`` and ``cluster status`` use by default
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from ..identity import keygen

__all__ = ["free_ports", "write_local_spec"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_local_spec(
    directory: str | Path,
    kind: str = "mesh",
    nodes: int = 3,
    *,
    raft: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    node_extra: dict[str, dict[str, Any]] | None = None,
    scheme: str = "ws",
    name: str | None = None,
    top: dict[str, Any] | None = None,
    clients: tuple[str, ...] = ("admin",),
) -> Path:
    """Write ``directory/cluster.toml`` for ``nodes`` nodes of ``kind``; return its path.

    Keys are generated into ``directory/keys``. ``raft``/``runtime`` become the spec's
    ``[raft]``/``[runtime]`` tables (default: 10 ms ticks, 150–300 ms elections, WAL in
    ``directory/data``; ``runtime={"data_dir": None}`` keeps the log in memory).
    ``node_extra`` adds fields to given nodes (TLS paths, …); ``top`` adds top-level
    fields (``hub``, ``coordinators``). Each of ``clients`` gets a key in
    ``directory/keys`` and a ``[[clients]]`` entry (the first is the CLI's default key).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ports = free_ports(nodes)
    ids = [f"n{i + 1}" for i in range(nodes)]
    lines = [
        "# written by ruflo_consensus.runtime.write_local_spec",
        f"name = {_toml_value(name or kind)}",
        f"kind = {_toml_value(kind)}",
        'backend = "raft"',
    ]
    for k, v in (top or {}).items():
        lines.append(f"{k} = {_toml_value(v)}")
    lines.append("")
    lines.append("[raft]")
    for k, v in (raft or {}).items():
        lines.append(f"{k} = {_toml_value(v)}")
    lines.append("")
    lines.append("[runtime]")
    rt = {"data_dir": "data", **(runtime or {})}
    if "data_dir" in rt and rt["data_dir"] is None:  # no folder for a WAL: memory storage
        rt["data_dir"] = "data"
        rt.setdefault("storage", "memory")
    for k, v in rt.items():
        if v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    for node_id, port in zip(ids, ports, strict=True):
        key_file = d / "keys" / f"{node_id}.key"
        if not key_file.exists():
            keygen(node_id, key_file)
        lines += [
            "",
            "[[nodes]]",
            f"id = {_toml_value(node_id)}",
            f'endpoint = "{scheme}://127.0.0.1:{port}"',
            f'key_file = "keys/{node_id}.key"',
        ]
        for k, v in (node_extra or {}).get(node_id, {}).items():
            lines.append(f"{k} = {_toml_value(v)}")
    for client in clients:
        key_file = d / "keys" / f"{client}.key"
        if not key_file.exists():
            keygen(client, key_file)
        lines += ["", "[[clients]]", f"id = {_toml_value(client)}"]
        lines.append(f'key_file = "keys/{client}.key"')
    path = d / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
