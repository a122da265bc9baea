"""The shipped topology specs drive both the simulator and real nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruflo_consensus.cli import main
from ruflo_consensus.runtime import load_spec

SPECS = sorted((Path(__file__).resolve().parent.parent / "topologies").glob("*.toml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_load_for_the_runtime(path: Path) -> None:
    spec = load_spec(path)
    assert len(spec.ids) == 5 and spec.topology.connected()
    assert spec.topology.kind == path.stem
    for node_id in spec.ids:
        assert spec.endpoints[node_id].scheme == "ws"
        assert spec.key_files[node_id] == path.parent / "keys" / f"{node_id}.key"
        assert spec.manifest_file(node_id).name == f"{node_id}.manifest.json"


def test_the_same_spec_drives_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    ring = next(p for p in SPECS if p.stem == "ring")
    assert main(["simulate", "--topology", str(ring), "--duration", "2", "--json"]) == 0
    assert '"status": "pass"' in capsys.readouterr().out
