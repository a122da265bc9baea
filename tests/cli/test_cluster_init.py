"""``cluster init DIR``: a local spec a user can start, without writing Python first."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ruflo_consensus.runtime import load_spec
from ruflo_consensus.runtime.cluster import cluster_down, default_run_dir
from tests.helpers.runtime_helpers import cli


def test_init_writes_a_spec_that_loads_with_its_voters_spares_and_private_keys(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "demo"
    done = cli(
        "cluster", "init", str(folder), "--nodes", "5", "--topology", "ring",
        "--spares", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    spec = load_spec(folder / "cluster.toml")
    assert shown == {
        "spec": str((folder / "cluster.toml").resolve()),
        "topology": "ring",
        "voters": ["n1", "n2", "n3"],
        "spares": ["n4", "n5"],
    }
    assert list(spec.voters) == ["n1", "n2", "n3"] and spec.spares == {"n4", "n5"}
    assert spec.topology.kind == "ring"
    endpoints = spec.endpoints.values()
    assert len({e.port for e in endpoints}) == 5 and {e.host for e in endpoints} == {"127.0.0.1"}
    for node_id in ("n1", "n2", "n3", "n4", "n5", "admin"):
        mode = stat.S_IMODE((folder / "keys" / f"{node_id}.key").stat().st_mode)
        assert mode == 0o600, (node_id, oct(mode))


def test_an_existing_spec_is_kept_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    assert cli("cluster", "init", str(folder)).returncode == 0
    before = (folder / "cluster.toml").read_bytes()
    again = cli("cluster", "init", str(folder), "--nodes", "5")
    assert again.returncode == 2
    assert "already there" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert (folder / "cluster.toml").read_bytes() == before
    forced = cli("cluster", "init", str(folder), "--nodes", "5", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(load_spec(folder / "cluster.toml").endpoints) == 5


@pytest.mark.parametrize(
    "args",
    [
        ("--nodes", "0"),
        ("--nodes", "65"),
        ("--nodes", "x"),
        ("--nodes", "3", "--spares", "3"),
        ("--spares", "-1"),
        ("--topology", "torus"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    folder = tmp_path / "demo"
    done = cli("cluster", "init", str(folder), *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert not folder.exists()


def test_a_cluster_from_init_starts_answers_and_stops(tmp_path: Path) -> None:
    spec = tmp_path / "demo" / "cluster.toml"
    assert cli("cluster", "init", str(tmp_path / "demo")).returncode == 0
    try:
        up = cli("cluster", "up", str(spec))
        assert up.returncode == 0, up.stderr
        put = cli("kv", "put", "greeting", "hello", "--spec", str(spec))
        assert put.returncode == 0, put.stderr
        got = cli("kv", "get", "greeting", "--spec", str(spec), "--node", "n3")
        assert got.returncode == 0 and got.stdout.strip() == '"hello"'
        assert (tmp_path / "demo" / "data").is_dir()  # durable by default
    finally:
        outcome = cluster_down(default_run_dir(spec))
    assert set(outcome.values()) == {"stopped"}
