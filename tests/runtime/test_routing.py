"""Routing around failures: ``Topology.next_hops`` and ``Topology.live_path``, and a
node's :class:`~ruflo_consensus.runtime.routing.Router` fed link changes and signed
link-state announcements without a socket."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.identity import Envelope, NonceSource, load_key_file, seal
from ruflo_consensus.runtime import load_peer_keys
from ruflo_consensus.runtime.routing import BROADCAST, KIND_LINK_STATE, Router
from ruflo_consensus.runtime.spec import ClusterSpec
from ruflo_consensus.statemachine import pack
from ruflo_consensus.topology import Topology, build_topology
from tests.helpers.runtime_helpers import local_spec


def test_ring_routes_the_long_way_round_a_dead_node() -> None:
    t = build_topology("ring", 5)
    assert t.path("n2", "n4") == ["n2", "n3", "n4"]  # the static route goes through n3
    assert t.live_path("n2", "n4", down_nodes={"n3"}) == ["n2", "n1", "n5", "n4"]
    assert t.next_hops("n2", down_nodes={"n3"}) == {"n1": "n1", "n5": "n1", "n4": "n1"}
    # a dead link alone (both nodes alive) is routed around the same way
    assert t.live_path("n2", "n3", down_links={("n3", "n2")}) == ["n2", "n1", "n5", "n4", "n3"]


def test_ring_tie_is_broken_by_knowledge_not_by_node_order() -> None:
    t = build_topology("ring", 6)
    assert t.path("n1", "n4") == ["n1", "n2", "n3", "n4"]  # the tie goes to n2 ...
    assert t.live_path("n1", "n4", down_nodes={"n3"}) == ["n1", "n6", "n5", "n4"]  # ... not now


def test_no_route_when_failures_cut_the_pair_apart() -> None:
    star = build_topology("star", 4)
    assert star.next_hops("n2", down_nodes={"n1"}) == {}
    assert star.live_path("n2", "n3", down_nodes={"n1"}) == []
    assert build_topology("ring", 4).live_path("n1", "n3", down_nodes={"n2", "n4"}) == []
    assert star.live_path("n2", "n2") == ["n2"]
    assert star.live_path("n2", "n3", down_nodes={"n3"}) == []  # the destination is down
    assert star.next_hops("n2", down_nodes={"n2"}) == {}  # so is the source


def test_without_failures_the_routes_are_the_static_ones() -> None:
    for kind in ("mesh", "ring", "star", "hierarchical"):
        t = build_topology(kind, 7)
        for a, b in itertools.permutations(t.ids, 2):
            assert t.live_path(a, b) == t.path(a, b)


@st.composite
def damaged_graphs(draw: st.DrawFn) -> tuple[Topology, set[str], set[tuple[str, str]]]:
    """A random connected graph, some dead nodes and some dead links."""
    n = draw(st.integers(2, 9))
    ids = [f"n{i + 1}" for i in range(n)]
    # a random spanning tree keeps it connected; random extra edges on top
    links = {(ids[draw(st.integers(0, i - 1))], ids[i]) for i in range(1, n)}
    pairs = list(itertools.combinations(ids, 2))
    links |= set(draw(st.lists(st.sampled_from(pairs), max_size=2 * n)))
    t = build_topology("custom", ids, extra_links=links)
    dead = set(draw(st.lists(st.sampled_from(ids), max_size=n - 1)))
    cut = set(draw(st.lists(st.sampled_from(sorted(t.links)), max_size=n)))
    return t, dead, cut


def _distances(
    t: Topology, dead: set[str], cut: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """All-pairs hop distances in the live graph (Floyd–Warshall, independent of BFS)."""
    live = [x for x in t.ids if x not in dead]
    inf = len(t.ids) + 1
    d = {(a, b): 0 if a == b else inf for a in live for b in live}
    for a, b in t.links:
        if a in dead or b in dead or (a, b) in cut or (b, a) in cut:
            continue
        d[a, b] = d[b, a] = 1
    for k, i, j in itertools.product(live, live, live):
        if d[i, k] + d[k, j] < d[i, j]:
            d[i, j] = d[i, k] + d[k, j]
    return {pair: v for pair, v in d.items() if v < inf}


@settings(max_examples=200, deadline=None)
@given(damaged_graphs())
def test_a_route_exists_exactly_when_the_live_graph_connects_the_pair(
    case: tuple[Topology, set[str], set[tuple[str, str]]],
) -> None:
    t, dead, cut = case
    dist = _distances(t, dead, cut)
    for a, b in itertools.permutations(t.ids, 2):
        path = t.live_path(a, b, down_nodes=dead, down_links=cut)
        if (a, b) not in dist:
            assert path == []
            assert b not in t.next_hops(a, down_nodes=dead, down_links=cut)
            continue
        # found, shortest, loop-free, and only over live nodes and live links
        assert path[0] == a and path[-1] == b
        assert len(path) - 1 == dist[a, b]
        assert len(set(path)) == len(path)
        assert not set(path) & dead
        for x, y in itertools.pairwise(path):
            assert t.linked(x, y) and (x, y) not in cut and (y, x) not in cut


def _router(spec: ClusterSpec, node_id: str, delivered: list[Envelope]) -> Router:
    """A node's router; nothing listens or dials until its transport runs (it never does)."""
    return Router(
        node_id,
        spec,
        load_key_file(spec.key_files[node_id], node_id),
        NonceSource(),
        load_peer_keys(spec),
        Counter(),
        random.Random(1),
        delivered.append,
        None,
    )


def _announce(spec: ClusterSpec, origin: str, down: list[str]) -> bytes:
    """``origin``'s signed link-state announcement: these neighbours are unreachable."""
    identity = load_key_file(spec.key_files[origin], origin)
    return seal(identity, BROADCAST, KIND_LINK_STATE, pack(down), NonceSource(), hops=4)


async def test_router_on_a_ring_goes_the_long_way_round_a_dead_link(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "ring", 5, runtime={"data_dir": None})
    delivered: list[Envelope] = []
    router = _router(spec, "n2", delivered)
    hops = {d: router.next_hop(d) for d in ("n1", "n3", "n4", "n5")}
    assert hops == {"n1": "n1", "n3": "n3", "n4": "n3", "n5": "n1"}

    # its own link to n3 fails: everything beyond it goes round through n1
    router.transport.links["n3"].down = True
    router.on_link_change("n3")
    assert router.next_hop("n4") == "n1" and router.next_hop("n3") == "n1"
    assert router.known_down() == {("n2", "n3")}

    # the link is back, but n4 says its link to n3 is down: n3 is direct again, n4 is
    # reached the other way round (a link either end reports down is avoided)
    router.transport.links["n3"].down = False
    router.on_link_change("n3")
    router.on_frame(_announce(spec, "n4", ["n3"]))
    assert ("n4", "n3") in router.known_down()
    assert router.next_hop("n3") == "n3" and router.next_hop("n4") == "n1"
    assert router.next_hop("n5") == "n1"
    assert not router.rejected and not delivered

    # an announcement of a link its sender does not have is refused and ignored
    router.on_frame(_announce(spec, "n5", ["n2"]))
    assert router.rejected == Counter({"bad-field": 1})
    assert ("n5", "n2") not in router.known_down()


async def test_router_on_a_star_has_no_route_when_the_hub_loses_the_target(
    tmp_path: Path,
) -> None:
    spec = local_spec(tmp_path, "star", 4, runtime={"data_dir": None})
    router = _router(spec, "n2", [])
    assert {d: router.next_hop(d) for d in ("n1", "n3", "n4")} == {
        "n1": "n1",
        "n3": "n1",
        "n4": "n1",
    }
    router.on_frame(_announce(spec, "n1", ["n3"]))  # the hub lost n3
    assert router.next_hop("n3") is None and router.next_hop("n4") == "n1"
    router.send("n3", 0, b"payload")
    assert router.unroutable == 1
    # the hub is a direct neighbour: with no way round, a frame waits on its link
    router.transport.links["n1"].down = True
    router.on_link_change("n1")
    assert router.next_hop("n1") == "n1" and router.next_hop("n4") is None
