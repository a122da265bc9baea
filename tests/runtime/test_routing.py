"""Routing around failures: ``Topology.next_hops`` and ``Topology.live_path``."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.topology import Topology, build_topology


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
