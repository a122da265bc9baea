"""Overlay topologies: the four kinds, spec files, next-hop routing, and bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruflo_consensus.sim import SimConfig, run_simulation
from ruflo_consensus.sim.config import SimConfigError
from ruflo_consensus.topology import TopologyError, build_topology, load_topology

ROOT = Path(__file__).resolve().parents[2]


def test_mesh_links_every_pair() -> None:
    t = build_topology("mesh", 5)
    assert len(t.links) == 10 and t.diameter() == 1


def test_ring_links_successor_and_predecessor_and_relays() -> None:
    t = build_topology("ring", 6)
    assert t.neighbours("n1") == ["n2", "n6"]
    assert t.path("n1", "n4") in (["n1", "n2", "n3", "n4"], ["n1", "n6", "n5", "n4"])
    assert t.diameter() == 3


def test_star_goes_through_the_hub() -> None:
    t = build_topology("star", 5, hub="n3")
    assert t.neighbours("n1") == ["n3"]
    assert t.path("n1", "n5") == ["n1", "n3", "n5"]


def test_hierarchical_workers_link_only_to_their_coordinator() -> None:
    t = build_topology("hierarchical", 7, coordinators=2)
    assert t.linked("n1", "n2")  # coordinators are meshed
    for worker in ("n3", "n4", "n5", "n6", "n7"):
        assert len(t.neighbours(worker)) == 1
        assert t.neighbours(worker)[0] in ("n1", "n2")
    assert t.connected()


@pytest.mark.parametrize("kind", ["mesh", "ring", "star", "hierarchical"])
def test_shipped_spec_files_load(kind: str) -> None:
    t = load_topology(ROOT / "topologies" / f"{kind}.toml")
    assert t.kind == kind and len(t.nodes) == 5 and t.connected()
    assert all(n.endpoint and n.endpoint.startswith("ws://127.0.0.1:") for n in t.nodes)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("kind = 'ring'\n", "nodes"),
        ("kind = 'blob'\n[[nodes]]\nid = 'a'\n", "unknown topology kind"),
        ("[[nodes]]\nid = 'a'\n[[nodes]]\nid = 'a'\n", "unique"),
        ("kind = 'custom'\nlinks = [['a', 'zz']]\n[[nodes]]\nid = 'a'\n", "not in the topology"),
        ("this is = = not toml", "not valid TOML"),
        ("[[nodes]]\nid = 3\n", "string id"),
    ],
)
def test_bad_spec_files_raise_a_typed_error_naming_the_file(tmp_path, text, needle) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    with pytest.raises(TopologyError) as exc:
        load_topology(spec)
    assert needle in str(exc.value) and "bad.toml" in str(exc.value)


def test_a_disconnected_custom_topology_is_refused_by_the_simulator(tmp_path) -> None:
    spec = tmp_path / "split.toml"
    spec.write_text(
        "kind = 'custom'\nlinks = [['a', 'b']]\n"
        + "".join(f"[[nodes]]\nid = '{n}'\n" for n in "abc")
    )
    with pytest.raises(SimConfigError, match="not connected"):
        SimConfig(nodes=3, topology=str(spec)).build_topology()


@pytest.mark.parametrize("kind", ["ring", "star", "hierarchical"])
def test_raft_runs_correctly_over_relays(kind: str) -> None:
    summary = run_simulation(SimConfig(seed=2, duration_s=6, topology=kind))
    assert summary.status == "pass", summary.violations
    assert summary.messages_relayed > 0
    assert summary.operations["ok"] > 100
    assert f"--topology {kind}" in summary.replay


def test_mesh_needs_no_relays() -> None:
    summary = run_simulation(SimConfig(seed=2, duration_s=3))
    assert summary.messages_relayed == 0
