"""Overlay topologies: which nodes hold a direct link, and next-hop routing over them.

``mesh``, ``hierarchical``, ``ring`` and ``star`` are graphs of direct links. A message
between two nodes without a direct link is relayed along the overlay by next-hop routing
(shortest path, ties broken by node order), so a topology changes latency, fan-out and
what one failure cuts off — never correctness. The simulator and the trio runtime take
their links from the same :class:`Topology`, built in code or loaded from a TOML spec.

:meth:`Topology.next_hop` is the static route over the whole overlay.
:meth:`Topology.next_hops` and :meth:`Topology.live_path` route around what is known to
be down (dead nodes, dead links): each hop is the first step of a shortest path in the
overlay minus the failures, so a relay that recomputes the route from its own position
with the same knowledge gets one step closer every hop — the path never loops.

A spec file::

    name = "ring"
    kind = "ring"                 # mesh | ring | star | hierarchical | custom
    backend = "raft"

    [[nodes]]
    id = "n1"
    endpoint = "ws://127.0.0.1:7101"

    # only for kind = "custom" (or to add links to a generated kind):
    links = [["n1", "n2"], ["n2", "n3"]]

``hub`` (star) and ``coordinators`` (hierarchical) are optional settings; by default the
first node is the hub and the first ``ceil(sqrt(n))`` nodes are coordinators.
"""

from __future__ import annotations

import math
import tomllib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "NodeSpec", "Topology", "TopologyError", "build_topology", "load_topology"]

KINDS = ("mesh", "ring", "star", "hierarchical", "custom")


class TopologyError(ValueError):
    """A topology spec is malformed: unknown kind, duplicate node, unknown link end, …"""


@dataclass(frozen=True)
class NodeSpec:
    """One node of a spec: its id, where it listens, and optional key file path."""

    id: str
    endpoint: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Topology:
    """An undirected overlay graph over ``nodes`` with next-hop routing tables."""

    name: str
    kind: str
    nodes: tuple[NodeSpec, ...]
    links: frozenset[tuple[str, str]]
    backend: str = "raft"
    _next_hop: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, repr=False)
    _adjacency: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ids = [n.id for n in self.nodes]
        if not ids:
            raise TopologyError("a topology needs at least one node")
        if len(set(ids)) != len(ids):
            raise TopologyError("node ids must be unique")
        known = set(ids)
        for a, b in self.links:
            if a not in known or b not in known:
                raise TopologyError(f"link {a}–{b} names a node that is not in the topology")
            if a == b:
                raise TopologyError(f"link {a}–{b} is a self-loop")
        self._adjacency.update({n: [m for m in ids if self.linked(n, m)] for n in ids})
        self._next_hop.update(self._routes())

    @property
    def ids(self) -> list[str]:
        """Node ids in spec order."""
        return [n.id for n in self.nodes]

    def neighbours(self, node: str) -> list[str]:
        """Direct links of ``node``, in spec order."""
        return list(self._adjacency[node])

    def linked(self, a: str, b: str) -> bool:
        """True when ``a`` and ``b`` hold a direct link."""
        return (a, b) in self.links or (b, a) in self.links

    def next_hop(self, src: str, dst: str) -> str | None:
        """The neighbour of ``src`` a message for ``dst`` goes to next (None: unreachable)."""
        if src == dst:
            return dst
        return self._next_hop[src].get(dst)

    def path(self, src: str, dst: str) -> list[str]:
        """The whole relay path from ``src`` to ``dst`` (both included); [] when unreachable."""
        path = [src]
        while path[-1] != dst:
            hop = self.next_hop(path[-1], dst)
            if hop is None:
                return []
            path.append(hop)
        return path

    def next_hops(
        self,
        src: str,
        *,
        down_nodes: Iterable[str] = (),
        down_links: Iterable[tuple[str, str]] = (),
    ) -> dict[str, str]:
        """First hops from ``src`` around failures: ``{destination: neighbour of src}``.

        The route to each destination is a shortest path in the overlay without
        ``down_nodes`` and without ``down_links`` (pairs, either order); ties are broken
        by node order, as in :meth:`next_hop`. A destination that the live overlay does
        not connect to ``src`` (or that is down itself) has no entry; a down ``src``
        reaches nothing. ``src`` itself is not a key.
        """
        dead = set(down_nodes)
        if src in dead:
            return {}
        cut = {frozenset(pair) for pair in down_links}
        first_hop: dict[str, str] = {}
        seen = {src}
        queue: deque[tuple[str, str | None]] = deque([(src, None)])
        while queue:
            cur, via = queue.popleft()
            for n in self._adjacency[cur]:
                if n in seen or n in dead or frozenset((cur, n)) in cut:
                    continue
                seen.add(n)
                hop = n if via is None else via
                first_hop[n] = hop
                queue.append((n, hop))
        return first_hop

    def live_path(
        self,
        src: str,
        dst: str,
        *,
        down_nodes: Iterable[str] = (),
        down_links: Iterable[tuple[str, str]] = (),
    ) -> list[str]:
        """The path a message takes when every hop routes with :meth:`next_hops` and the
        same knowledge of failures; [] when the live overlay does not connect the pair."""
        dead, cut = frozenset(down_nodes), frozenset(down_links)
        path = [src]
        while path[-1] != dst:
            hop = self.next_hops(path[-1], down_nodes=dead, down_links=cut).get(dst)
            if hop is None or hop in path:  # (a loop cannot happen; never follow one)
                return []
            path.append(hop)
        return path if src not in dead else []

    def connected(self) -> bool:
        """True when every node can reach every other."""
        first = self.ids[0]
        return all(self.next_hop(first, other) is not None for other in self.ids[1:])

    def diameter(self) -> int:
        """The longest shortest path, in hops."""
        return max((len(self.path(a, b)) - 1 for a in self.ids for b in self.ids), default=0)

    def _routes(self) -> dict[str, dict[str, str]]:
        return {src: self.next_hops(src) for src in self.ids}


def _pairs(
    ids: Sequence[str], kind: str, hub: str | None, coordinators: int | None
) -> set[tuple[str, str]]:
    n = len(ids)
    links: set[tuple[str, str]] = set()
    if kind == "mesh":
        links = {(ids[i], ids[j]) for i in range(n) for j in range(i + 1, n)}
    elif kind == "ring":
        if n == 2:
            links = {(ids[0], ids[1])}
        elif n > 2:
            links = {(ids[i], ids[(i + 1) % n]) for i in range(n)}
    elif kind == "star":
        centre = hub or ids[0]
        if centre not in ids:
            raise TopologyError(f"hub {centre!r} is not a node")
        links = {(centre, x) for x in ids if x != centre}
    elif kind == "hierarchical":
        k = coordinators or max(1, math.ceil(math.sqrt(n)))
        if not 1 <= k <= n:
            raise TopologyError(f"coordinators must be between 1 and {n}")
        queens, workers = ids[:k], ids[k:]
        links = {(queens[i], queens[j]) for i in range(k) for j in range(i + 1, k)}
        for w, worker in enumerate(workers):
            links.add((queens[w % k], worker))
    elif kind != "custom":
        raise TopologyError(f"unknown topology kind {kind!r}; choose from {', '.join(KINDS)}")
    return links


def build_topology(
    kind: str,
    nodes: int | Sequence[str] | Sequence[NodeSpec],
    *,
    name: str | None = None,
    backend: str = "raft",
    hub: str | None = None,
    coordinators: int | None = None,
    extra_links: Iterable[tuple[str, str]] = (),
) -> Topology:
    """Build a topology of ``kind`` over ``nodes`` (a count gives ids ``n1..nN``)."""
    if isinstance(nodes, int):
        if nodes < 1:
            raise TopologyError("a topology needs at least one node")
        specs = tuple(NodeSpec(f"n{i + 1}") for i in range(nodes))
    else:
        specs = tuple(n if isinstance(n, NodeSpec) else NodeSpec(str(n)) for n in nodes)
    ids = [s.id for s in specs]
    links = _pairs(ids, kind, hub, coordinators) | set(extra_links)
    canonical = frozenset(tuple(sorted(pair)) for pair in links)
    return Topology(name or kind, kind, specs, canonical, backend)  # type: ignore[arg-type]


def _spec_error(path: Path, message: str) -> TopologyError:
    return TopologyError(f"{path}: {message}")


def load_topology(path: str | Path) -> Topology:
    """Load a TOML topology spec; raise :class:`TopologyError` naming the file on any problem."""
    p = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _spec_error(p, f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _spec_error(p, f"not valid TOML: {exc}") from None
    kind = data.get("kind", "mesh")
    if not isinstance(kind, str):
        raise _spec_error(p, "kind must be a string")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _spec_error(p, "needs a non-empty [[nodes]] list")
    specs = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            raise _spec_error(p, f"nodes[{i}] needs a string id")
        endpoint = raw.get("endpoint")
        key_file = raw.get("key_file")
        if endpoint is not None and not isinstance(endpoint, str):
            raise _spec_error(p, f"nodes[{i}].endpoint must be a string")
        if key_file is not None and not isinstance(key_file, str):
            raise _spec_error(p, f"nodes[{i}].key_file must be a string")
        specs.append(NodeSpec(raw["id"], endpoint, key_file))
    raw_links = data.get("links", [])
    if not isinstance(raw_links, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in raw_links
    ):
        raise _spec_error(p, "links must be a list of [a, b] node-id pairs")
    hub = data.get("hub")
    coordinators = data.get("coordinators")
    if hub is not None and not isinstance(hub, str):
        raise _spec_error(p, "hub must be a node id")
    if coordinators is not None and (type(coordinators) is not int):
        raise _spec_error(p, "coordinators must be an integer")
    backend = data.get("backend", "raft")
    if not isinstance(backend, str):
        raise _spec_error(p, "backend must be a string")
    name = data.get("name", p.stem)
    try:
        return build_topology(
            kind,
            specs,
            name=str(name),
            backend=backend,
            hub=hub,
            coordinators=coordinators,
            extra_links=[(a, b) for a, b in raw_links],
        )
    except TopologyError as exc:
        raise _spec_error(p, str(exc)) from None
