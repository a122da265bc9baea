"""The shipped topology specs drive both the simulator and real nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ruflo_consensus.cli import main
from ruflo_consensus.runtime import load_spec

SPECS = sorted((Path(__file__).resolve().parents[2] / "topologies").glob("*.toml"))


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


def _fresh_interpreter(code: str) -> list[str]:
    """The lines ``code`` prints in a new Python process (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()


def test_runtime_commands_do_not_import_the_simulator() -> None:
    """``kv``/``cluster``/``node`` parse without ``ruflo_consensus.sim``; ``simulate`` loads it."""
    probe = (
        "import sys; from ruflo_consensus.cli import build_parser; p = build_parser(); "
        "p.parse_args(['kv', 'get', 'a', '--spec', 'x.toml']); "
        "p.parse_args(['cluster', 'status', 'x.toml']); "
        "p.parse_args(['node', '--spec', 'x.toml', '--id', 'n1']); "
        "print(sorted(m for m in sys.modules if m.startswith('ruflo_consensus.sim'))); "
        "a = p.parse_args(['simulate', '--backend', 'crdt', '--duration', '2']); "
        "print(a.backend, a.duration, 'ruflo_consensus.sim.config' in sys.modules)"
    )
    assert _fresh_interpreter(probe) == ["[]", "crdt 2.0 True"]


def test_a_raft_node_and_the_kv_client_do_not_load_pycrdt() -> None:
    """pycrdt is the CRDT backend's: the runtime's node and client never import it, and
    ``ruflo_consensus.core`` still hands out the CRDT names when asked."""
    probe = (
        "import sys; import ruflo_consensus.runtime.node, ruflo_consensus.runtime.client; "
        "print('pycrdt' in sys.modules); "
        "from ruflo_consensus.core import CrdtCore; "
        "print('pycrdt' in sys.modules, CrdtCore.__module__)"
    )
    assert _fresh_interpreter(probe) == ["False", "True ruflo_consensus.core.crdt"]
